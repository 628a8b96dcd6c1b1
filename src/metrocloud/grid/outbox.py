"""The durable outbox: messages to peers, committed in the transaction of the fact behind them.

A message is a row per peer (``grid_outbox``), written by the same transaction that appends
the statement it carries, so a fact is never committed without its messages, nor a message
sent for a fact that was rolled back. The delivery worker (:mod:`metrocloud.grid.delivery`)
sends each peer's messages in id order; a peer that does not answer is retried with
exponential backoff and jitter, its later messages wait behind the first (per-peer FIFO, so
a certificate's suspension never overtakes its issue). The receiver applies a message id
once (:mod:`metrocloud.grid.inbox`). A message the peer refuses for good (4xx) is set aside
as ``failed`` with the peer's reason and shown by ``metrocloud grid status``.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from metrocloud.domain.errors import InvalidInput
from metrocloud.store.schema import grid_outbox

__all__ = [
    "DELIVERED",
    "FAILED",
    "PENDING",
    "Backlog",
    "OutboxMessage",
    "backlog",
    "backoff_ms",
    "cancel_for_peer",
    "due",
    "enqueue",
    "mark_delivered",
    "mark_failed",
    "mark_retry",
    "new_message_id",
    "prune_delivered",
]

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


def new_message_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxMessage:
    id: int
    message_id: str
    peer_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: str
    size: int  # bytes of the stored payload


def enqueue(
    conn: Connection,
    *,
    peer_ids: Sequence[str],
    kind: str,
    payload: Mapping[str, Any],
    created_at: str,
    now_ms: int,
    message_id: str | None = None,
) -> str:
    """Queue one message for each of ``peer_ids`` (same message id); returns the id."""
    if not kind or len(kind) > 40:
        raise InvalidInput(f"message kind must have 1 to 40 characters, got {kind!r}")
    mid = message_id or new_message_id()
    if not peer_ids:
        return mid
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    conn.execute(
        insert(grid_outbox),
        [
            {
                "message_id": mid,
                "peer_id": p,
                "kind": kind,
                "payload": text,
                "created_at": created_at,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now_ms,
                "delivered_at": None,
                "last_error": None,
            }
            for p in peer_ids
        ],
    )
    return mid


def due(
    conn: Connection,
    peer_id: str,
    *,
    now_ms: int,
    limit: int,
    max_bytes: int | None = None,
) -> list[OutboxMessage]:
    """The next messages for ``peer_id`` in order, if the first of them is due; else none.
    With ``max_bytes``, only the first ones whose payloads fit in it (always at least one),
    and only their payloads are read (a backlog of large messages is not loaded whole)."""
    heads = conn.execute(
        select(
            grid_outbox.c.id,
            grid_outbox.c.next_attempt_at,
            func.length(grid_outbox.c.payload).label("size"),
        )
        .where(grid_outbox.c.peer_id == peer_id, grid_outbox.c.status == PENDING)
        .order_by(grid_outbox.c.id)
        .limit(limit)
    ).all()
    if not heads or heads[0].next_attempt_at > now_ms:
        return []
    ids: list[int] = []
    total = 0
    for h in heads:
        total += int(h.size)
        if ids and max_bytes is not None and total > max_bytes:
            break
        ids.append(h.id)
    rows = conn.execute(
        select(grid_outbox).where(grid_outbox.c.id.in_(ids)).order_by(grid_outbox.c.id)
    ).all()
    return [
        OutboxMessage(
            id=r.id,
            message_id=r.message_id,
            peer_id=r.peer_id,
            kind=r.kind,
            payload=json.loads(r.payload),
            attempts=r.attempts,
            created_at=r.created_at,
            size=len(r.payload),
        )
        for r in rows
    ]


def mark_delivered(conn: Connection, ids: Sequence[int], *, at: str) -> None:
    if ids:
        conn.execute(
            update(grid_outbox)
            .where(grid_outbox.c.id.in_(list(ids)))
            .values(status=DELIVERED, delivered_at=at, last_error=None)
        )


def mark_retry(
    conn: Connection, row_id: int, *, attempts: int, next_attempt_at: int, error: str
) -> None:
    conn.execute(
        update(grid_outbox)
        .where(grid_outbox.c.id == row_id)
        .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:2000])
    )


def mark_failed(conn: Connection, row_id: int, *, attempts: int, error: str) -> None:
    conn.execute(
        update(grid_outbox)
        .where(grid_outbox.c.id == row_id)
        .values(status=FAILED, attempts=attempts, last_error=error[:2000])
    )


def cancel_for_peer(conn: Connection, peer_id: str, reason: str) -> int:
    """Set the pending messages of a removed peer aside (``failed`` with ``reason``)."""
    return (
        conn.execute(
            update(grid_outbox)
            .where(grid_outbox.c.peer_id == peer_id, grid_outbox.c.status == PENDING)
            .values(status=FAILED, last_error=reason)
        ).rowcount
        or 0
    )


def prune_delivered(conn: Connection, before: str) -> int:
    """Drop delivered messages created before ``before`` (a timestamp)."""
    return (
        conn.execute(
            delete(grid_outbox).where(
                grid_outbox.c.status == DELIVERED, grid_outbox.c.created_at < before
            )
        ).rowcount
        or 0
    )


def backoff_ms(
    attempts: int, *, base_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> int:
    """Delay before attempt ``attempts + 1``: ``min(max_s, base_s * 2**(attempts-1))`` with
    "equal jitter" (half fixed, half random), so peers coming back are not hit in lockstep."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return int(1000 * ceiling * (0.5 + 0.5 * rng()))


@dataclass(frozen=True, kw_only=True, slots=True)
class Backlog:
    peer_id: str
    pending: int
    failed: int
    delivered: int
    oldest_pending_at: str | None
    last_error: str | None


def backlog(conn: Connection) -> dict[str, Backlog]:
    """Per peer: messages waiting, set aside and delivered; the oldest waiting one."""
    counts: dict[str, dict[str, int]] = {}
    for r in conn.execute(
        select(grid_outbox.c.peer_id, grid_outbox.c.status, func.count()).group_by(
            grid_outbox.c.peer_id, grid_outbox.c.status
        )
    ):
        counts.setdefault(r[0], {})[r[1]] = int(r[2])
    out = {}
    for peer_id, c in counts.items():
        head = conn.execute(
            select(grid_outbox.c.created_at, grid_outbox.c.last_error)
            .where(grid_outbox.c.peer_id == peer_id, grid_outbox.c.status == PENDING)
            .order_by(grid_outbox.c.id)
            .limit(1)
        ).first()
        failed = conn.execute(
            select(grid_outbox.c.last_error)
            .where(grid_outbox.c.peer_id == peer_id, grid_outbox.c.status == FAILED)
            .order_by(grid_outbox.c.id.desc())
            .limit(1)
        ).first()
        last_error = head.last_error if head is not None and head.last_error else None
        if last_error is None and failed is not None:
            last_error = failed.last_error
        out[peer_id] = Backlog(
            peer_id=peer_id,
            pending=c.get(PENDING, 0),
            failed=c.get(FAILED, 0),
            delivered=c.get(DELIVERED, 0),
            oldest_pending_at=head.created_at if head is not None else None,
            last_error=last_error,
        )
    return out
