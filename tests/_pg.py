"""PostgreSQL for tests: a fresh schema per test; mandatory when CI=true."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import pytest
from sqlalchemy import create_engine, text

PG_URL = os.environ.get(
    "METROCLOUD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@cache
def pg_unreachable() -> str | None:
    """None if PostgreSQL answers, else why not."""
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()
    return None


def require_pg() -> None:
    reason = pg_unreachable()
    if reason is None:
        return
    message = f"PostgreSQL at {PG_URL} is unreachable ({reason})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; PostgreSQL tests are mandatory when CI=true")
    pytest.skip(f"{message}; skipped outside CI only (CI != 'true')")


@contextmanager
def fresh_schema() -> Iterator[str]:
    """Create schema ``t_<uuid>``, yield its name, drop it with everything in it."""
    require_pg()
    schema = f"t_{uuid.uuid4().hex}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
