"""Storage: the registry database (SQLAlchemy Core, Alembic) and the log projection."""

from metrocloud.store.database import Database, StorageUnavailable, sqlite_url
from metrocloud.store.projection import project

__all__ = ["Database", "StorageUnavailable", "project", "sqlite_url"]
