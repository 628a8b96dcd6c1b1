"""The storage boundary: one engine, migrations, and read/write transactions.

SQLite (the embedded default) and PostgreSQL run the same code. Writes go through
:meth:`Database.write`, which on SQLite serializes writers in-process (SQLite has one writer
anyway; serializing here avoids ``database is locked`` under a thread pool) and on PostgreSQL
relies on the ledger's row lock to order appends.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from metrocloud.domain.errors import InvalidInput, MetrocloudError

__all__ = ["Database", "StorageUnavailable", "sqlite_url"]


class StorageUnavailable(MetrocloudError):
    """The database cannot be reached or opened."""

    code = "storage-unavailable"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'registry.sqlite3').resolve()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own implicit BEGIN is switched off: _sqlite_begin emits it, so that write
    # transactions can say BEGIN IMMEDIATE (SQLAlchemy's documented pysqlite recipe)
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-131072")  # 128 MiB per connection
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_full_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE for write transactions, plain (deferred) BEGIN for reads.

    A write transaction takes SQLite's write lock before it reads, so two processes (worker
    processes of one node) queue on ``busy_timeout`` instead of one failing with
    "database is locked" when a deferred reader tries to become a writer.
    """
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One database: SQLite file or PostgreSQL server."""

    def __init__(
        self, url: str, *, schema: str | None = None, echo: bool = False, durable: bool = False
    ) -> None:
        """``durable``: on SQLite, commits are synced to disk (``synchronous=FULL``), so a
        commit survives power loss, not only a crashed process (the default, ``NORMAL`` in
        WAL mode, may lose the newest commits on power loss). PostgreSQL always syncs."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise InvalidInput(
                f"not a database URL: {url!r} (expected sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST:PORT/DB)"
            ) from exc
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidInput(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            if schema:
                kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
        self.engine: Engine = create_engine(parsed, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
            if durable:
                event.listen(self.engine, "connect", _sqlite_full_sync)
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else None
        self._pinned = threading.local()
        self._pinned_all: list[Connection] = []
        self._pinned_lock = threading.Lock()
        #: the connection of :meth:`write_now` (SQLite; used under ``_write_lock`` only)
        self._now: Any = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def describe(self) -> str:
        """The URL without its password, safe to print and log."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on any exception."""
        if self._write_lock is not None:
            with self._write_lock, self.engine.connect() as conn:
                conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def pinned_read(self) -> Iterator[Connection]:
        """A read on a connection kept open for the calling thread, for one thread that
        serves many small reads (the event loop's point reads: the AAS fast lane), so a
        read costs no pool check-out and check-in. Not for pool threads: each would pin a
        connection of the pool for good.

        The read's transaction, begun by SQLAlchemy or by a raw driver cursor
        (:func:`metrocloud.store.point.get_row`), is ended afterwards, so the next read sees
        newer commits and PostgreSQL never sees the connection idle in a transaction. A
        connection the driver failed on is dropped; the next read opens a new one.
        """
        conn: Connection | None = getattr(self._pinned, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect()
            self._pinned.conn = conn
            with self._pinned_lock:
                self._pinned_all.append(conn)
        try:
            yield conn
        except DBAPIError:
            self._unpin(conn)
            raise
        finally:
            if not conn.closed:
                if conn.in_transaction():
                    conn.rollback()
                elif self.dialect != "sqlite":  # SQLite: the raw cursor began none
                    conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]

    def _unpin(self, conn: Connection) -> None:
        self._pinned.conn = None
        with self._pinned_lock:
            if conn in self._pinned_all:
                self._pinned_all.remove(conn)
        conn.invalidate()
        conn.close()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision.

        A database already at the newest revision is left as it is after one query (the
        revision it records against the migration scripts' head, read once per process):
        every CLI command and every worker opens the node, and Alembic's own environment
        costs about 0.1 s even when there is nothing to do."""
        from alembic import command

        try:
            with self.engine.begin() as conn:
                if _recorded_revisions(conn) == _head_revisions():
                    return
                cfg = _alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StorageUnavailable(f"cannot open database {self.describe()}: {exc.orig}") from exc

    def write_now(self, sql: str, rows: Sequence[Sequence[Any]]) -> bool:
        """One write transaction running the driver-level ``sql`` over ``rows``, but only if
        the database is free right now: True once committed; False, having done nothing,
        when a writer of this process is in its transaction or SQLite's write lock is held
        (by another process). SQLite files only (False elsewhere): for the event loop, which
        must not wait, and sends its rows to a writer thread instead
        (:class:`metrocloud.store.groupcommit.GroupCommitter`). A failure of the statement
        itself rolls back and raises.

        It runs on a connection of its own that never waits for the lock
        (``busy_timeout=0``), in autocommit mode with an explicit ``BEGIN IMMEDIATE``."""
        lock = self._write_lock
        name = self.url.database
        if not name or name == ":memory:" or name.startswith("file:"):
            return False  # one database per connection, or a shared one the pool manages
        if lock is None or not lock.acquire(blocking=False):
            return False
        try:
            if self._now is None:
                self._now = self.engine.raw_connection()
                self._now.driver_connection.execute("PRAGMA busy_timeout=0")
            raw = self._now.driver_connection
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    return False
                raise
            try:
                raw.executemany(sql, rows)
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            return True
        finally:
            lock.release()

    def dispose(self) -> None:
        with self._pinned_lock:
            pinned, self._pinned_all = self._pinned_all, []
        for conn in pinned:
            conn.close()
        if self._write_lock is not None:
            with self._write_lock:
                now, self._now = self._now, None
            if now is not None:
                now.close()
        self.engine.dispose()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("metrocloud.store") / "migrations"))
    return cfg


@functools.cache
def _head_revisions() -> frozenset[str]:
    """The migration scripts' head revision(s)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(_alembic_config()).get_heads())


def _recorded_revisions(conn: Connection) -> frozenset[str] | None:
    """The revision(s) Alembic recorded in this database (its schema, on PostgreSQL); None
    when it has none (a new database)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return frozenset(r[0] for r in rows)
