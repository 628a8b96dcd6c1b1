"""Fixtures of the ledger tests: a fresh database per test (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event

from metrocloud.ledger import TransparencyLog, create_schema
from metrocloud.trust.keys import PrivateKey

from .._pg import PG_URL, fresh_schema
from ._support import Clock


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
    with fresh_schema() as schema:
        engine = create_engine(
            PG_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_size=8
        )
        try:
            with engine.begin() as conn:
                create_schema(conn)
            yield engine
        finally:
            engine.dispose()


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
