"""Fixtures of the ledger tests: a fresh database per test (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text

from metrocloud.ledger import TransparencyLog, create_schema
from metrocloud.trust.keys import PrivateKey

from ._support import Clock

PG_URL = os.environ.get(
    "METROCLOUD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@cache
def _pg_unreachable() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()
    return None


def _require_pg() -> None:
    reason = _pg_unreachable()
    if reason is None:
        return
    message = f"PostgreSQL at {PG_URL} is unreachable ({reason})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; PostgreSQL tests are mandatory when CI=true")
    pytest.skip(f"{message}; these tests are skipped outside CI (CI != 'true')")


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: object, _record: object) -> None:
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """An engine whose search_path is a fresh schema ``t_<uuid>``, dropped afterwards."""
    _require_pg()
    schema = f"t_{uuid.uuid4().hex}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(
        PG_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_size=8
    )
    try:
        with engine.begin() as conn:
            create_schema(conn)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh database with the ledger tables: SQLite file, then PostgreSQL."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")
        return
    eng = _sqlite_engine(tmp_path / "ledger.sqlite3")
    with eng.begin() as conn:
        create_schema(conn)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="session")
def other_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(key: PrivateKey, clock: Clock) -> TransparencyLog:
    return TransparencyLog(log_id="metrocloud-test-log", signer=key, clock=clock)
