"""Write turns: one write transaction at a time on a SQLite file, queued in the kernel.

SQLite lets one writer in at a time; the others retry in its busy handler, which sleeps up
to 100 ms between tries and leaves the database idle meanwhile. The node's busy writers (the
intake's group commits, the lake flusher, the streaming monitor, the access log) queue here
instead, on a ``flock`` beside the database file, and the next one is woken the moment the
lock is released. Off SQLite files (PostgreSQL, in-memory databases) the database queues
writers itself and a turn is a no-op.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from metrocloud.store.database import Database

__all__ = ["write_turn", "write_turn_now"]


def _flock_now(fd: int, kind: int) -> bool:
    """``flock(fd, kind)`` without waiting: whether it was taken."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _WriteTurn:
    """One write transaction at a time on a SQLite file among the writers of all the node's
    processes that queue here (the intake, the lake flusher, the streaming monitor, the
    access log), queued in the kernel (``flock`` on
    ``<database>-write.lock``): the next writer is woken when the lock is released, where
    SQLite's own busy handler retries after sleeps of up to 100 ms, leaving the database idle
    meanwhile.

    The lake flusher goes first (``priority``): it is one thread against many submissions,
    and the lake falling behind the intake only moves the work to later. In this process a
    condition orders the threads; across processes the flusher holds ``<database>-flush.lock``
    while it waits, and the intake's writers wait for that lock to be free before they queue.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition(threading.Lock())  # flock is per file, not thread
        self._held = False
        self._first = 0  # priority callers waiting
        self._fd = os.open(path.with_name(path.name + "-write.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        self._flush_fd = os.open(
            path.with_name(path.name + "-flush.lock"), os.O_RDWR | os.O_CREAT, 0o644
        )

    @contextmanager
    def __call__(self, priority: bool) -> Iterator[None]:
        with self._cond:
            self._first += priority
            while self._held or (self._first and not priority):
                self._cond.wait()
            self._first -= priority
            self._held = True
        try:
            if priority:
                fcntl.flock(self._flush_fd, fcntl.LOCK_EX)  # the intake's writers hold back
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                finally:
                    fcntl.flock(self._flush_fd, fcntl.LOCK_UN)
            else:
                fcntl.flock(self._flush_fd, fcntl.LOCK_SH)  # no flusher waiting
                fcntl.flock(self._flush_fd, fcntl.LOCK_UN)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    @contextmanager
    def now(self) -> Iterator[bool]:
        """The turn only if it is free right now: True, held until the block ends; else
        False at once. For a caller that must not wait (the event loop) and has somewhere
        else to send its work."""
        with self._cond:
            taken = not (self._held or self._first)
            self._held = self._held or taken
        locked = False
        try:
            # no flusher waiting (it holds the flush lock), then the write lock itself
            if taken and _flock_now(self._flush_fd, fcntl.LOCK_SH):
                fcntl.flock(self._flush_fd, fcntl.LOCK_UN)
                locked = _flock_now(self._fd, fcntl.LOCK_EX)
            try:
                yield locked
            finally:
                if locked:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            if taken:
                with self._cond:
                    self._held = False
                    self._cond.notify_all()


_write_turns: dict[str, _WriteTurn | None] = {}
_write_turns_lock = threading.Lock()


def _turn(db: Database) -> _WriteTurn | None:
    """The turn of ``db``'s file (one per file and process); None off SQLite files."""
    name = db.url.database if db.is_sqlite else None
    key = name or ""
    turn = _write_turns.get(key)
    if turn is None and key not in _write_turns:
        with _write_turns_lock:
            if key not in _write_turns:
                if not name or name == ":memory:" or name.startswith("file:"):
                    _write_turns[key] = None
                else:
                    path = Path(name).resolve()
                    same = next(
                        (t for t in _write_turns.values() if t is not None and t.path == path),
                        None,
                    )
                    _write_turns[key] = same or _WriteTurn(path)
            turn = _write_turns[key]
    return turn


def write_turn(db: Database, *, priority: bool = False) -> AbstractContextManager[None]:
    """Queue for a write transaction on ``db`` (see :class:`_WriteTurn`; a no-op off SQLite
    files, where the database queues writers itself). ``priority``: before the others of
    this process."""
    turn = _turn(db)
    return nullcontext() if turn is None else turn(priority)


def write_turn_now(db: Database) -> AbstractContextManager[bool]:
    """The write turn on ``db`` if it is free right now (the block sees True and holds it),
    else False at once; always True off SQLite files, where there is no turn to take."""
    turn = _turn(db)
    return nullcontext(True) if turn is None else turn.now()
