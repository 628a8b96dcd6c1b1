"""Group commit: on the event loop when the database is free, through the writer otherwise."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from metrocloud.store.database import Database
from metrocloud.store.groupcommit import GroupCommitter
from metrocloud.store.turns import write_turn, write_turn_now

_meta = MetaData()
_rows = Table(
    "rows",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("who", String(20), nullable=False),
)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'g.sqlite3'}")
    _meta.create_all(database.engine)
    yield database
    database.dispose()


def _stored(db: Database) -> list[tuple[int, str]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(select(_rows).order_by(_rows.c.id))]


def test_reads_of_one_loop_turn_share_one_transaction_written_on_the_loop(db: Database) -> None:
    committer = GroupCommitter(db, _rows, ("id", "who"))

    async def main() -> None:
        await asyncio.gather(*(committer.append_async([(i, f"r{i}")]) for i in range(1, 6)))
        await committer.append_async([(6, "r6"), (7, "r7")])

    asyncio.run(main())
    assert _stored(db) == [(i, f"r{i}") for i in range(1, 8)]
    assert (committer.transactions, committer.on_loop, committer.rows_written) == (2, 2, 7)
    assert committer._thread is None  # the writer thread was never needed
    committer.close()


def test_a_busy_database_sends_the_rows_to_the_writer_which_waits_its_turn(
    db: Database, tmp_path: Path
) -> None:
    committer = GroupCommitter(db, _rows, ("id", "who"))
    other = sqlite3.connect(
        tmp_path / "g.sqlite3", isolation_level=None, check_same_thread=False
    )  # another process
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO rows (id, who) VALUES (1, 'other')")
    released = threading.Timer(0.3, lambda: other.execute("COMMIT"))

    async def main() -> None:
        released.start()
        await committer.append_async([(2, "loop")])

    asyncio.run(main())
    released.join()
    other.close()
    # the loop's attempt did nothing; the writer thread waited for the lock, then wrote
    assert _stored(db) == [(1, "other"), (2, "loop")]
    assert (committer.transactions, committer.on_loop) == (1, 0)
    committer.close()


def test_a_turn_held_by_another_thread_sends_the_rows_to_the_writer(db: Database) -> None:
    committer = GroupCommitter(db, _rows, ("id", "who"))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write_turn(db):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    with write_turn_now(db) as free:
        assert free is False  # without waiting
    threading.Timer(0.2, release.set).start()
    asyncio.run(committer.append_async([(1, "after")]))
    holder.join()
    assert _stored(db) == [(1, "after")]
    assert committer.on_loop == 0
    with write_turn_now(db) as free:
        assert free is True  # released again
    committer.close()


def test_a_failed_transaction_on_the_loop_fails_every_read_of_its_turn(db: Database) -> None:
    committer = GroupCommitter(db, _rows, ("id", "who"))
    asyncio.run(committer.append_async([(1, "first")]))

    async def main() -> list[BaseException | None]:
        results = await asyncio.gather(
            committer.append_async([(2, "fine")]),
            committer.append_async([(1, "duplicate key")]),
            return_exceptions=True,
        )
        return list(results)

    first, second = asyncio.run(main())
    assert isinstance(first, sqlite3.IntegrityError)  # one transaction: both fail
    assert isinstance(second, sqlite3.IntegrityError)
    assert _stored(db) == [(1, "first")]  # rolled back, nothing half-written
    # the connection is usable again
    asyncio.run(committer.append_async([(2, "fine")]))
    assert _stored(db) == [(1, "first"), (2, "fine")]
    committer.close()


def test_write_now_never_waits_and_does_nothing_when_it_cannot(
    db: Database, tmp_path: Path
) -> None:
    sql = "INSERT INTO rows (id, who) VALUES (?, ?)"
    with db.write():  # a writer of this process is inside
        assert db.write_now(sql, [(1, "x")]) is False
    other = sqlite3.connect(tmp_path / "g.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    assert db.write_now(sql, [(1, "x")]) is False  # another connection holds the lock
    other.execute("ROLLBACK")
    other.close()
    assert _stored(db) == []
    assert db.write_now(sql, [(1, "x")]) is True
    assert _stored(db) == [(1, "x")]
    memory = Database("sqlite://")
    assert memory.write_now(sql, [(1, "x")]) is False  # one database per connection
    memory.dispose()
