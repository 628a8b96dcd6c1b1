"""The ASGI application factory for worker processes (``metrocloud serve --workers N``).

Each worker opens the node from the environment (``METROCLOUD_*``, see ``Settings``), which
the CLI sets from its options before starting the workers. Writers in different workers
queue on the database (PostgreSQL row lock, SQLite ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from fastapi import FastAPI

from metrocloud.api.app import create_app
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings

__all__ = ["app_from_environment"]


def app_from_environment() -> FastAPI:
    return create_app(Node.open(Settings(), create=False), background=True)
