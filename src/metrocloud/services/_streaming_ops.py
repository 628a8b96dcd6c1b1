"""The streaming monitor's queue, for the node's operator: what is still owed and what the
worker gave up on (:mod:`metrocloud.services._streaming_worker`), and putting a poisoned
segment back once the cause is fixed.

Re-queued, a segment keeps its commit position: it is the next one the worker takes (within
its idle poll, a second by default), read back from the lake as its copy was let go when it
was poisoned. The segments committed after it were taken in meanwhile, so its readings not
newer than their register's state are *late*: counted (``stream_segments.late``), not
compared; its status bits still raise ``seal_broken`` / ``tamper_detected``. A segment that
was taken in after all (the flusher's redo, a replay) changes nothing: the monitor is
idempotent per segment id and the worker only drops its row. For alerts as if it had never
failed, replay the lake (``metrocloud monitor replay``, :mod:`._streaming_replay`).

Who may: the node admin over HTTP (the queue names segments, not instruments, and holds no
instrument data), or the node's CLI (``actor`` None).
"""

from __future__ import annotations

import logging
from typing import Any

from metrocloud.domain.errors import Conflict, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.ingest.intake import TURNS
from metrocloud.services._streaming_queue import (
    Queued,
    QueueState,
    queue_page,
    queued_row,
    requeue,
)
from metrocloud.services._streaming_store import segment_seen
from metrocloud.services.common import (
    Actor,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    require_role,
)
from metrocloud.services.node import Node
from metrocloud.store.schema import stream_segments
from metrocloud.store.turns import write_turn

__all__ = [
    "QUEUE_STATES",
    "SegmentNotPoisoned",
    "SegmentNotQueued",
    "list_stream_queue",
    "queued_json",
    "retry_stream_segment",
]

log = logging.getLogger("metrocloud.services.streaming")

QUEUE_STATES: tuple[QueueState, ...] = ("pending", "poisoned")
_ACTION_READ = "read the streaming queue"
_ACTION_RETRY = "retry a streaming segment"


class SegmentNotQueued(NotFound):
    """The segment is neither queued nor taken in: this node's monitor never owed it."""

    code = "stream-segment-unknown"


class SegmentNotPoisoned(Conflict):
    """The segment is waiting for its next try, or was taken in already: nothing to retry."""

    code = "stream-segment-not-poisoned"


def _check_segment(segment: str) -> None:
    if not isinstance(segment, str) or not 0 < len(segment) <= 200:
        raise InvalidInput(f"segment id {str(segment)[:40]!r} must be 1 to 200 characters")


def queued_json(q: Queued) -> dict[str, Any]:
    """The wire form (API and ``metrocloud monitor queue --json``)."""
    return {
        "segment": q.segment,
        "state": q.state,
        "position": q.position,
        "committed_at": q.committed_at,
        "readings": q.readings,
        "attempts": q.attempts,
        "next_try_at": q.next_try_at,
        "error": q.error,
        "poisoned_at": q.poisoned_at,
    }


def list_stream_queue(
    node: Node,
    actor: Actor | None = None,
    *,
    state: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> Page[Queued]:
    """One page of ``stream_queue`` in commit order: the segments still owed (``pending``,
    with their failed tries and next try) and those given up (``poisoned``, with the error
    of their last try); ``state`` for one of the two. ``actor``: the HTTP caller (the node
    admin), None for the node's CLI."""
    if actor is not None:
        require_role(actor, PartyRole.NODE_ADMIN, action=_ACTION_READ)
    check_limit(limit)
    which = next((s for s in QUEUE_STATES if s == state), None)
    if state is not None and which is None:
        raise InvalidInput(f"queue state {state!r} is none of {', '.join(QUEUE_STATES)}")
    after = decode_cursor(cursor, int)
    with node.db.read() as conn:
        rows = queue_page(
            conn, state=which, after=None if after is None else after[0], limit=limit + 1
        )
    nxt = encode_cursor([rows[limit - 1].position]) if len(rows) > limit else None
    return Page(rows[:limit], nxt)


def retry_stream_segment(
    node: Node, actor: Actor | None, segment: str, *, reason: str | None = None
) -> Queued:
    """Put poisoned ``segment`` back in the queue (no tries counted, due now, at its commit
    position; see the module docstring for what its readings then raise). The row as it is
    now. Refused: a segment not in the queue and never taken in (:class:`SegmentNotQueued`),
    one waiting for its next try or taken in already (:class:`SegmentNotPoisoned`)."""
    if actor is not None:
        require_role(actor, PartyRole.NODE_ADMIN, action=_ACTION_RETRY)
    _check_segment(segment)
    with write_turn(node.db), node.db.write() as conn, TURNS.writing():
        if requeue(conn, segment):
            row = queued_row(conn, segment)
            assert row is not None  # updated in this transaction
        else:
            row = queued_row(conn, segment)
            if row is not None:
                raise SegmentNotPoisoned(
                    f"segment {segment!r} is not poisoned: it is queued, {row.attempts} failed "
                    f"tries so far, next try {row.next_try_at or 'now'}; the monitor takes it "
                    "without a retry",
                    rule="streaming queue (docs/monitoring.md#operations)",
                )
            if segment_seen(conn, segment):
                at = conn.execute(
                    stream_segments.select().where(stream_segments.c.segment == segment)
                ).one()
                raise SegmentNotPoisoned(
                    f"segment {segment!r} is not poisoned: the monitor took it in at "
                    f"{at.observed_at}; to compute its alerts again, replay the lake "
                    "(metrocloud monitor replay)",
                    rule="streaming queue (docs/monitoring.md#operations)",
                )
            raise SegmentNotQueued(
                f"segment {segment!r} is not in the streaming queue and was never taken in: "
                "no segment of that id was committed while streaming ran"
            )
    who = "the node's CLI" if actor is None else f"party {actor.party_id}"
    log.warning(
        "streaming monitor: poisoned segment %s re-queued by %s%s (last error: %s)",
        segment,
        who,
        f": {reason}" if reason else "",
        row.error,
    )
    return row
