"""The streaming monitor's queue (table ``stream_queue``, migration 0010): the lake segments
committed and not yet taken in, in commit order.

Why a table and not a list in memory: the flusher deletes a segment's intake rounds right after
its hook returned, so once the hook has added the segment here, nothing but this row says
that the monitor still owes it. The row goes in the transaction that takes the segment in
(:meth:`~metrocloud.services.streaming.StreamMonitor.observe`), so a crash at any point
leaves the segment either queued or observed, never neither. Positions grow with each new
row: the order of the hook's calls, which is the flusher's commit order; a segment added
again (the flusher redoes its pending segment after a crash) keeps its first position.

A poisoned row keeps its position too: put back (:func:`requeue`, the operator's retry once
the cause is fixed), it is the queue's head again, ahead of the segments committed after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from metrocloud.store.schema import stream_queue

__all__ = [
    "QueueState",
    "Queued",
    "add_queued",
    "drop_queued",
    "drop_queued_many",
    "poisoned_rows",
    "queue_counts",
    "queue_head",
    "queue_page",
    "queued_row",
    "record_failure",
    "requeue",
]

#: a row waits for its (next) try, or was given up after its last one
QueueState = Literal["pending", "poisoned"]

#: segment ids per ``IN (...)`` (one bound parameter each)
_CHUNK = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    """One ``stream_queue`` row."""

    position: int
    segment: str
    #: when the flusher's hook added it (RFC 3339 UTC, ms)
    committed_at: str
    readings: int
    #: failed tries so far, when the next may start, the last error
    attempts: int = 0
    next_try_at: str | None = None
    error: str | None = None
    #: set once it failed its last try: it is no longer tried
    poisoned_at: str | None = None

    @property
    def state(self) -> QueueState:
        return "pending" if self.poisoned_at is None else "poisoned"


def _queued(row: Any) -> Queued:
    m = row._mapping
    return Queued(**{k: m[k] for k in Queued.__slots__})


def add_queued(conn: Connection, segment: str, *, readings: int, at: str) -> None:
    """Queue ``segment`` unless it is queued already (then it keeps its position)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(stream_queue)
        .values(segment=segment, committed_at=at, readings=readings, attempts=0)
        .on_conflict_do_nothing(index_elements=["segment"])
    )


def drop_queued(conn: Connection, segment: str) -> None:
    conn.execute(delete(stream_queue).where(stream_queue.c.segment == segment))


def queue_head(conn: Connection) -> Queued | None:
    """The first segment still to be tried (poisoned ones are passed over)."""
    q = stream_queue.c
    row = conn.execute(
        select(stream_queue).where(q.poisoned_at.is_(None)).order_by(q.position).limit(1)
    ).first()
    return None if row is None else _queued(row)


def record_failure(
    conn: Connection,
    segment: str,
    *,
    attempts: int,
    error: str,
    next_try_at: str | None,
    poisoned_at: str | None,
) -> None:
    conn.execute(
        update(stream_queue)
        .where(stream_queue.c.segment == segment)
        .values(attempts=attempts, error=error, next_try_at=next_try_at, poisoned_at=poisoned_at)
    )


def queue_counts(conn: Connection) -> tuple[int, int, int]:
    """(segments waiting, their readings, poisoned segments)."""
    q = stream_queue.c
    waiting = q.poisoned_at.is_(None)
    row = conn.execute(
        select(
            func.count().filter(waiting),
            func.coalesce(func.sum(q.readings).filter(waiting), 0),
            func.count().filter(q.poisoned_at.is_not(None)),
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def poisoned_rows(conn: Connection) -> list[Queued]:
    q = stream_queue.c
    rows = conn.execute(select(stream_queue).where(q.poisoned_at.is_not(None)).order_by(q.position))
    return [_queued(r) for r in rows]


def queued_row(conn: Connection, segment: str) -> Queued | None:
    row = conn.execute(select(stream_queue).where(stream_queue.c.segment == segment)).first()
    return None if row is None else _queued(row)


def queue_page(
    conn: Connection, *, state: QueueState | None, after: int | None, limit: int
) -> list[Queued]:
    """At most ``limit`` rows in commit order (position) past ``after``, of one state or both."""
    q = stream_queue.c
    stmt = select(stream_queue)
    if state == "pending":
        stmt = stmt.where(q.poisoned_at.is_(None))
    elif state == "poisoned":
        stmt = stmt.where(q.poisoned_at.is_not(None))
    if after is not None:
        stmt = stmt.where(q.position > after)
    return [_queued(r) for r in conn.execute(stmt.order_by(q.position).limit(limit))]


def requeue(conn: Connection, segment: str) -> bool:
    """Put poisoned ``segment`` back: no tries counted, due now, its position kept (so it is
    the next one taken); its last error stays until a try replaces it or takes it in. False
    if it is not queued and poisoned (the condition is in the statement: no race with the
    thread, which never writes a poisoned row)."""
    q = stream_queue.c
    done = conn.execute(
        update(stream_queue)
        .where(q.segment == segment, q.poisoned_at.is_not(None))
        .values(attempts=0, next_try_at=None, poisoned_at=None)
    )
    return bool(done.rowcount)


def drop_queued_many(conn: Connection, segments: Iterable[str]) -> tuple[int, int]:
    """Delete the rows of ``segments``; (pending, poisoned) rows deleted."""
    q = stream_queue.c
    ids: Sequence[str] = sorted(set(segments))
    pending = poisoned = 0
    for lo in range(0, len(ids), _CHUNK):
        part = ids[lo : lo + _CHUNK]
        for (at,) in conn.execute(select(q.poisoned_at).where(q.segment.in_(part))):
            pending += at is None
            poisoned += at is not None
        conn.execute(delete(stream_queue).where(q.segment.in_(part)))
    return pending, poisoned
