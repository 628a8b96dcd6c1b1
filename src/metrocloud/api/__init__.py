"""The node's REST API (FastAPI)."""

from metrocloud.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
