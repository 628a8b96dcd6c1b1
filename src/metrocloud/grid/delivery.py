"""Delivering the outbox: per peer, in order, in batches, with backoff; and the worker loop.

One round (:func:`deliver_due`) takes, for each peer whose first waiting message is due, up
to ``batch`` messages in id order and POSTs them to the peer's ``/api/v1/grid/messages``.
The peer applies them in order, each in its own transaction, and answers per message:
``applied`` or ``duplicate`` (delivered), ``retry`` (a transient refusal: wait and retry
this one) or ``refused`` (for good: set aside). It stops at the first message it does not
apply, so the order is kept. No answer at all backs the peer off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metrocloud.grid.client import GridClient
from metrocloud.grid.errors import PeerRefused, PeerUnavailable
from metrocloud.grid.outbox import (
    OutboxMessage,
    backoff_ms,
    due,
    mark_delivered,
    mark_failed,
    mark_retry,
)
from metrocloud.grid.peers import Peer
from metrocloud.grid.traffic import record_contact
from metrocloud.store.database import Database
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "MAX_REQUEST_BYTES",
    "MESSAGES_PATH",
    "RETRYABLE_STATUS",
    "DeliveryReport",
    "Worker",
    "deliver_due",
]

log = logging.getLogger("metrocloud.grid")

MESSAGES_PATH = "/api/v1/grid/messages"
#: refusals that may pass on their own: the peer does not know this node yet (401: its
#: operator has not added the admission yet, or the clocks drifted) or a conflict (409)
RETRYABLE_STATUS = frozenset({401, 409})
#: payload bytes in one delivery request (the receiver takes up to 64 MiB per request)
MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclass(kw_only=True)
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def _within(msgs: list[OutboxMessage], limit: int) -> list[OutboxMessage]:
    """The first messages whose payloads fit in ``limit`` bytes (always at least one)."""
    total, out = 0, list[OutboxMessage]()
    for m in msgs:
        total += m.size
        if out and total > limit:
            break
        out.append(m)
    return out


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True, kw_only=True)
class _Backoff:
    clock: Callable[[], datetime]
    base_s: float
    max_s: float

    def retry(self, conn: Any, m: OutboxMessage, error: str) -> None:
        attempts = m.attempts + 1
        delay = backoff_ms(attempts, base_s=self.base_s, max_s=self.max_s)
        mark_retry(
            conn, m.id, attempts=attempts, next_attempt_at=_ms(self.clock()) + delay, error=error
        )


def _settle(
    db: Database,
    peer: Peer,
    msgs: list[OutboxMessage],
    answer: Any,
    backoff: _Backoff,
    report: DeliveryReport,
) -> None:
    """Mark what the peer applied delivered; the first it did not, retried or set aside."""
    results = answer.get("results", []) if isinstance(answer, dict) else []
    by_id = {r.get("message_id"): r for r in results if isinstance(r, dict)}
    done: list[int] = []
    with db.write() as conn:
        for m in msgs:
            r = by_id.get(m.message_id)
            if r is None:  # not reached: the peer stopped before it
                break
            status = r.get("status")
            if status in ("applied", "duplicate"):
                done.append(m.id)
                continue
            detail = str(r.get("detail", status))[:2000]
            if status == "refused":
                mark_failed(conn, m.id, attempts=m.attempts + 1, error=detail)
                report.failed += 1
            else:
                backoff.retry(conn, m, detail)
                report.retried += 1
            report.errors[peer.node_id] = detail
            break
        at = utc_timestamp(backoff.clock())
        mark_delivered(conn, done, at=at)
        if done:
            record_contact(conn, peer.node_id, at=at, error=None, delivered=True)
    report.delivered += len(done)


def deliver_due(
    db: Database,
    client: GridClient,
    peers: Sequence[Peer],
    *,
    clock: Callable[[], datetime],
    batch: int,
    base_s: float,
    max_s: float,
) -> DeliveryReport:
    """One delivery round over ``peers``."""
    report = DeliveryReport()
    backoff = _Backoff(clock=clock, base_s=base_s, max_s=max_s)
    for peer in peers:
        with db.read() as conn:
            msgs = due(
                conn, peer.node_id, now_ms=_ms(clock()), limit=batch, max_bytes=MAX_REQUEST_BYTES
            )
        if not msgs:
            continue
        msgs = _within(msgs, MAX_REQUEST_BYTES)
        body = {
            "messages": [
                {"message_id": m.message_id, "kind": m.kind, "payload": m.payload} for m in msgs
            ]
        }
        try:
            answer = client.call(peer, MESSAGES_PATH, body)
        except (PeerUnavailable, PeerRefused) as exc:
            retry = isinstance(exc, PeerUnavailable) or exc.status in RETRYABLE_STATUS
            with db.write() as conn:
                if retry:
                    backoff.retry(conn, msgs[0], str(exc))
                else:
                    mark_failed(conn, msgs[0].id, attempts=msgs[0].attempts + 1, error=str(exc))
            report.errors[peer.node_id] = str(exc)
            report.retried += retry
            report.failed += not retry
            continue
        _settle(db, peer, msgs, answer, backoff, report)
    return report


class Worker:
    """A daemon thread that runs ``step`` every ``interval`` seconds (or when woken)."""

    def __init__(self, name: str, interval: float, step: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.step = step
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a bad round must not end the worker; the next one retries
                log.exception("grid worker %s: round failed", self.name)
            self._wake.wait(self.interval)
            self._wake.clear()
