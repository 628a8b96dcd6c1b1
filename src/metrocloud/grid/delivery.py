"""Delivering the outbox: per peer, in order, in batches, with backoff; and the worker loop.

One round (:func:`deliver_due`) serves every peer whose first waiting message is due, the
peers side by side (one thread each, so a slow peer does not hold up the others). For a
peer it takes up to ``batch`` messages in id order within :data:`MAX_REQUEST_BYTES` and
POSTs them in one signed request (format version :data:`DELIVERY_VERSION`,
docs/grid.md#deliveries) to the peer's ``/api/v1/grid/messages``. The peer answers per
message: ``applied`` or ``duplicate`` (delivered), ``refused`` (for good: set aside with the
reason) or ``retry`` (a transient refusal: this one waits and is retried with backoff, and
the later ones wait behind it). A message the answer does not mention was not reached and
stays pending. No answer at all backs the peer off. While requests go through whole, the
round goes on with the peer's next messages, for up to ``budget_s`` seconds, so a burst
drains at the pace the peer applies it, not one request per worker interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metrocloud.grid._settling import Settlement, cut, settle
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
    "DELIVERY_VERSION",
    "MAX_REQUEST_BYTES",
    "MESSAGES_PATH",
    "RETRYABLE_STATUS",
    "DeliveryReport",
    "Worker",
    "deliver_due",
]

log = logging.getLogger("metrocloud.grid")

MESSAGES_PATH = "/api/v1/grid/messages"
#: the delivery format this node sends (docs/grid.md#deliveries): 2 lets the receiver go on
#: past a message it refuses for good; a receiver that reads only 1 stops there, which this
#: sender reads the same way
DELIVERY_VERSION = 2
#: refusals that may pass on their own: the peer does not know this node yet (401: its
#: operator has not added the admission yet, or the clocks drifted) or a conflict (409)
RETRYABLE_STATUS = frozenset({401, 409})
#: payload bytes in one delivery request (the receiver takes up to 64 MiB per request)
MAX_REQUEST_BYTES = 8 * 1024 * 1024
#: peers served side by side in one round
_THREADS = 8


@dataclass(kw_only=True)
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    def add(self, other: DeliveryReport) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.failed += other.failed
        self.errors.update(other.errors)
        self.requests += other.requests


def _within(msgs: list[OutboxMessage], limit: int) -> list[OutboxMessage]:
    """The first messages whose payloads fit in ``limit`` bytes (always at least one)."""
    return msgs[: cut([m.size for m in msgs], count=len(msgs), max_bytes=limit)]


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
) -> bool:
    """Mark what the peer applied delivered, what it refused set aside, the first it asked
    to retry retried; True if every message sent got a final answer."""
    s: Settlement
    s, covered = settle([(m.id, m.message_id) for m in msgs], answer)
    by_id = {m.id: m for m in msgs}
    with db.write() as conn:
        for row_id, detail in s.refused:
            mark_failed(conn, row_id, attempts=by_id[row_id].attempts + 1, error=detail)
            report.errors[peer.node_id] = detail
        if s.retry is not None:
            backoff.retry(conn, by_id[s.retry[0]], s.retry[1])
            report.errors[peer.node_id] = s.retry[1]
        at = utc_timestamp(backoff.clock())
        mark_delivered(conn, s.delivered, at=at)
        if s.delivered:
            record_contact(conn, peer.node_id, at=at, error=None, delivered=True)
    report.delivered += len(s.delivered)
    report.failed += len(s.refused)
    report.retried += s.retry is not None
    return s.complete and covered == len(msgs)


def _body(msgs: Sequence[OutboxMessage]) -> dict[str, Any]:
    return {
        "version": DELIVERY_VERSION,
        "messages": [
            {"message_id": m.message_id, "kind": m.kind, "payload": m.payload} for m in msgs
        ],
    }


def _deliver_to(
    db: Database,
    client: GridClient,
    peer: Peer,
    *,
    backoff: _Backoff,
    batch: int,
    budget_s: float,
) -> DeliveryReport:
    """Requests to ``peer`` while its messages are due, go through whole, and the budget
    lasts."""
    report = DeliveryReport()
    deadline = time.monotonic() + budget_s
    while True:
        with db.read() as conn:
            msgs = due(
                conn,
                peer.node_id,
                now_ms=_ms(backoff.clock()),
                limit=batch,
                max_bytes=MAX_REQUEST_BYTES,
            )
        if not msgs:
            return report
        msgs = _within(msgs, MAX_REQUEST_BYTES)
        report.requests += 1
        try:
            answer = client.call(peer, MESSAGES_PATH, _body(msgs))
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
            return report
        if not _settle(db, peer, msgs, answer, backoff, report) or time.monotonic() > deadline:
            return report


def deliver_due(
    db: Database,
    client: GridClient,
    peers: Sequence[Peer],
    *,
    clock: Callable[[], datetime],
    batch: int,
    base_s: float,
    max_s: float,
    budget_s: float = 5.0,
) -> DeliveryReport:
    """One delivery round over ``peers`` (side by side); ``budget_s``: how long a round
    keeps sending to a peer whose requests go through."""
    report = DeliveryReport()
    backoff = _Backoff(clock=clock, base_s=base_s, max_s=max_s)

    def one(peer: Peer) -> DeliveryReport:
        return _deliver_to(db, client, peer, backoff=backoff, batch=batch, budget_s=budget_s)

    if len(peers) <= 1:
        for peer in peers:
            report.add(one(peer))
        return report
    with ThreadPoolExecutor(min(len(peers), _THREADS), thread_name_prefix="grid-send") as pool:
        for r in pool.map(one, peers):
            report.add(r)
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
