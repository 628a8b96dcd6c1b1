"""Group commit: rows appended by many concurrent readers, written in shared transactions.

Every read of another party's record must be in the owner's access log *before* the data is
returned (ARCHITECTURE.md decision 4). One write transaction per read would make the access
log the cost of every read; instead each caller hands its rows to a :class:`GroupCommitter`
and waits until they are committed. One writer thread takes everything that queued up while
the previous transaction ran and writes it in one transaction (one driver-level
``executemany``), then wakes all of those callers. Under load a transaction carries the rows
of many requests; an idle node still commits each request's rows at once.

On the event loop (:meth:`GroupCommitter.append_async`) of a node on a SQLite file, the rows
of all the reads answered in one turn of the loop are written right there, at the end of
that turn, when the database is free at that moment (:meth:`Database.write_now`, the
process's write turn taken without waiting: :func:`metrocloud.store.turns.write_turn_now`):
a commit in WAL mode without a sync costs less than handing the rows to the writer thread
and its answer back (two thread switches, each waiting for the interpreter lock). When the
database is not free, the rows go to the writer thread, which waits its turn.

Every caller waits for its own commit, so the writer thread holds nothing acknowledged when
the process ends. Callers wait in either world: :meth:`GroupCommitter.append` blocks a thread,
:meth:`GroupCommitter.append_async` awaits on the event loop without blocking it. A failed
transaction fails every caller whose rows it carried, so no caller returns data whose read
was not logged.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table

from metrocloud.store.bulk import insert_rows, insert_sql
from metrocloud.store.database import Database
from metrocloud.store.turns import write_turn, write_turn_now

__all__ = ["GroupCommitter"]

Rows = Sequence[tuple[Any, ...]]


class _Waiter:
    """One caller's rows and how to tell it the outcome."""

    __slots__ = ("error", "event", "future", "loop", "rows")

    def __init__(
        self,
        rows: Rows,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.rows = rows
        self.loop = loop
        self.future = future
        self.event = threading.Event() if future is None else None
        self.error: BaseException | None = None

    def done(self, error: BaseException | None) -> None:
        if self.future is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future, error)
        else:
            self.error = error
            assert self.event is not None
            self.event.set()


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.cancelled():  # the request went away; its rows were still written (or not)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class GroupCommitter:
    """Appends rows to ``table`` in transactions shared by all callers waiting at once."""

    def __init__(
        self, db: Database, table: Table, columns: Sequence[str], *, max_rows: int = 20_000
    ) -> None:
        unknown = [c for c in columns if c not in table.c]
        if unknown:
            raise KeyError(f"table {table.name} has no column(s) {unknown}")
        self._db = db
        self._table = table
        self._columns = tuple(columns)
        self._max_rows = max_rows
        self._pending: deque[_Waiter] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: per event loop, the callers of its current turn (written at the turn's end)
        self._turns: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        self._sql = insert_sql(db.engine.dialect, table, self._columns)
        #: transactions and rows written (for tests and /metrics); ``on_loop``: of those
        #: transactions, the ones written on the event loop
        self.transactions = 0
        self.rows_written = 0
        self.on_loop = 0

    # -- callers ---------------------------------------------------------------------------

    def append(self, rows: Rows) -> None:
        """Return once ``rows`` are committed; raise what the transaction raised."""
        if not rows:
            return
        waiter = _Waiter(rows)
        self._enqueue(waiter)
        assert waiter.event is not None
        waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error

    async def append_async(self, rows: Rows) -> None:
        """:meth:`append` for the event loop: awaits the commit without blocking the loop."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = _Waiter(rows, loop, future)
        if self._db.is_sqlite:
            turn = self._turns.get(loop)
            if turn is None:
                turn = self._turns[loop] = []
                loop.call_soon(self._end_of_turn, loop)
            turn.append(waiter)
        else:  # a commit is a round trip to the server: never on the loop
            self._enqueue(waiter)
        await future

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop, after the callbacks of one turn: their rows in one transaction now,
        if the database is free; otherwise to the writer thread."""
        waiters = self._turns.pop(loop)
        rows = [row for waiter in waiters for row in waiter.rows]
        error: BaseException | None = None
        written = False
        try:
            with write_turn_now(self._db) as free:
                written = free and self._db.write_now(self._sql, rows)
        except BaseException as exc:  # every caller of this transaction learns of it
            error = exc
        if written or error is not None:
            if written:
                self._count(len(rows), on_loop=True)
            for waiter in waiters:
                assert waiter.future is not None
                _resolve(waiter.future, error)
            return
        for waiter in waiters:
            self._enqueue(waiter)

    def _count(self, rows: int, *, on_loop: bool = False) -> None:
        with self._cond:
            self.transactions += 1
            self.rows_written += rows
            self.on_loop += on_loop

    def close(self) -> None:
        """Write what is queued, then stop the writer thread (a later append restarts it)."""
        with self._cond:
            thread, self._closed = self._thread, True
            self._cond.notify_all()
        if thread is not None:
            thread.join()
        with self._cond:
            self._closed, self._thread = False, None

    # -- the writer ------------------------------------------------------------------------

    def _enqueue(self, waiter: _Waiter) -> None:
        with self._cond:
            self._pending.append(waiter)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"group-commit-{self._table.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _take(self) -> list[_Waiter] | None:
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            taken = [self._pending.popleft()]
            count = len(taken[0].rows)
            while self._pending and count + len(self._pending[0].rows) <= self._max_rows:
                waiter = self._pending.popleft()
                taken.append(waiter)
                count += len(waiter.rows)
            return taken

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            error: BaseException | None = None
            try:
                rows = [row for waiter in batch for row in waiter.rows]
                with write_turn(self._db), self._db.write() as conn:
                    insert_rows(conn, self._table, self._columns, rows)
                self._count(len(rows))
            except BaseException as exc:  # every caller of this transaction learns of it
                error = exc
            for waiter in batch:
                waiter.done(error)
