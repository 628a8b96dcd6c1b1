"""Fleet monitoring in streaming mode: alerts raised as readings arrive, without a scan of
the lake.

The lake flusher hands each segment it commits to its ``on_committed`` hook; in the node
that is :meth:`StreamWorker.enqueue`, which only queues the segment (``stream_queue``) and
leaves the work to a thread of its own that calls :meth:`StreamMonitor.observe` in commit
order, retries a segment that fails and catches up after a restart
(:mod:`metrocloud.services._streaming_worker`). The monitor compares the
segment's readings with each register's newest earlier reading, kept in ``stream_state``,
and raises or adds to one alert per (instrument, kind) in ``stream_alerts``: the state,
the alerts and the segment's id are written in one transaction, so a restart continues
where the last committed segment left off, and a segment observed again (the flusher
rewrites its pending segment after a crash) changes nothing.

What it decides, with batch mode's definitions and thresholds
(:mod:`metrocloud.services.monitoring`: :func:`~metrocloud.services.monitoring.max_gap`,
:func:`~metrocloud.services.monitoring.is_counter_reset`, the same evidence):

- ``counter_reset``, ``reverse_flow``: a register value below its predecessor's;
- ``gap``: more than ``gap_intervals`` nominal intervals since the predecessor;
- ``seal_broken``, ``tamper_detected``: the device's status bits on a reading (batch mode
  takes these from life-cycle events; the bit comes with the device's first reading after
  the event, so its time is that reading's).

What it leaves to batch mode, and why (docs/monitoring.md, "Streaming"): ``clock_drift``
(a median per instrument-day over consecutive days: a day must be complete), ``drift``,
``under_registration`` and ``stuck_register`` (fits and peer statistics over weeks),
``unapproved_software`` and ``intake_quarantine`` (the intake records them as it checks).
A reading not newer than its register's state (late) is counted and not compared.

The operator's side (docs/monitoring.md, "Operations"): :func:`list_stream_queue` and
:func:`retry_stream_segment` (:mod:`._streaming_ops`: what the worker owes and gave up on,
a poisoned segment put back) and :func:`replay_stream` (:mod:`._streaming_replay`: state and
alerts rebuilt from the lake, under its writer lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import ColumnElement, select, true

from metrocloud.domain.errors import InvalidInput
from metrocloud.ingest.intake import TURNS
from metrocloud.services._streaming_compute import (
    STREAM_KINDS,
    flag_findings,
    registers,
    step,
)
from metrocloud.services._streaming_lake import SegmentUnavailable
from metrocloud.services._streaming_ops import (
    QUEUE_STATES,
    SegmentNotPoisoned,
    SegmentNotQueued,
    list_stream_queue,
    queued_json,
    retry_stream_segment,
)
from metrocloud.services._streaming_queue import (
    Queued,
    QueueState,
    drop_queued,
    poisoned_rows,
    queue_counts,
)
from metrocloud.services._streaming_replay import Replayed, replay_stream
from metrocloud.services._streaming_store import (
    iso_ms,
    load_alerts,
    load_state,
    merge_alert,
    save_alerts,
    save_segment,
    save_state,
    segment_seen,
    select_alerts,
)
from metrocloud.services._streaming_worker import Retry, StreamStats, StreamWorker
from metrocloud.services.common import (
    Actor,
    Page,
    access_rows,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from metrocloud.services.instruments import instrument_row
from metrocloud.services.monitoring import DEFAULT_THRESHOLDS, Severity, Thresholds
from metrocloud.services.node import Node
from metrocloud.services.visibility import (
    check_can_read,
    granted_ids,
    refuse_node_admin,
    visible_filter,
)
from metrocloud.store.database import Database
from metrocloud.store.schema import instruments, stream_alerts
from metrocloud.store.turns import write_turn

__all__ = [
    "QUEUE_STATES",
    "STREAM_KINDS",
    "Observed",
    "QueueState",
    "Queued",
    "Replayed",
    "Retry",
    "SegmentNotPoisoned",
    "SegmentNotQueued",
    "SegmentUnavailable",
    "StreamAlert",
    "StreamBacklog",
    "StreamMonitor",
    "StreamStats",
    "StreamWorker",
    "list_stream_alerts",
    "list_stream_queue",
    "party_stream_alerts",
    "queued_json",
    "replay_stream",
    "retry_stream_segment",
    "stream_alert_json",
    "stream_backlog",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamAlert:
    """One alert of streaming mode: the first evidence, and how often it recurred since."""

    instrument: str
    kind: str
    severity: Severity
    #: first evidence (UTC), as batch mode defines it for the kind
    at: datetime
    #: newest evidence
    last_at: datetime
    count: int
    #: the numbers that justify it (batch mode's for the kind, ``count`` first)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    raised_at: datetime
    updated_at: datetime
    #: the lake segment whose readings raised it
    segment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What observing one segment did."""

    segment: str
    #: readings in the segment, and those not newer than their register's state (late)
    readings: int
    late: int = 0
    registers: int = 0
    #: alerts raised by this segment, and existing ones it added to
    raised: tuple[StreamAlert, ...] = ()
    updated: int = 0
    #: the segment was observed before: nothing changed
    repeated: bool = False


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _alert(row: Mapping[Any, Any]) -> StreamAlert:
    return StreamAlert(
        instrument=row["instrument"],
        kind=row["kind"],
        severity=row["severity"],
        at=_time(row["at"]),
        last_at=_time(row["last_at"]),
        count=int(row["count"]),
        evidence={"count": int(row["count"]), **row["evidence"]},
        raised_at=_time(row["raised_at"]),
        updated_at=_time(row["updated_at"]),
        segment=row["segment"],
    )


class StreamMonitor:
    """Observes the lake's segments in commit order (see the module docstring).

    One monitor per lake writer: one thread calls :meth:`observe` (the flusher's, or the
    :class:`StreamWorker`'s), and the lake's writer lock keeps any other process from
    writing segments meanwhile, so the state read before a segment's transaction is still
    the state when it commits. The transaction also deletes the segment's ``stream_queue``
    row, if any: taken in and no longer owed are one fact.
    ``on_alert`` is called with each newly raised alert after its transaction committed
    (a failure there is logged, the alert stays raised)."""

    def __init__(
        self,
        db: Database,
        *,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_alert: Callable[[StreamAlert], object] | None = None,
        priority: bool = True,
    ) -> None:
        self.db = db
        #: its write transactions go before the intake's (:func:`write_turn`): True when it
        #: runs inside the flusher's commit, False in its own thread (:class:`StreamWorker`)
        self.priority = priority
        self.thresholds = thresholds
        self.clock = clock
        self.on_alert = on_alert
        self.segments_observed = 0
        self.readings_observed = 0
        self._lock = threading.Lock()

    def __call__(self, segment: str, table: pa.Table) -> Observed:
        return self.observe(segment, table)

    def observe(self, segment: str, table: pa.Table) -> Observed:
        """Take in the readings of lake segment ``segment`` (the lake's readings schema)."""
        if not isinstance(segment, str) or not 0 < len(segment) <= 200:
            raise InvalidInput(f"segment id {segment!r} must be 1 to 200 characters")
        with self._lock:
            return self._observe(segment, table)

    def _observe(self, segment: str, table: pa.Table) -> Observed:
        with self.db.read() as conn:
            if segment_seen(conn, segment):
                return Observed(segment=segment, readings=table.num_rows, repeated=True)
            regs = registers(table)
            state_t, state_v = load_state(conn, regs.keys)
        result = step(regs, state_t, state_v, self.thresholds)
        findings = result.findings + flag_findings(table)
        keys = regs.keys
        now = iso_ms(round(self.clock().timestamp() * 1000))
        raised: list[StreamAlert] = []
        updated = 0
        with write_turn(self.db, priority=self.priority), self.db.write() as conn, TURNS.writing():
            if segment_seen(conn, segment):  # pragma: no cover - one writer per lake
                return Observed(segment=segment, readings=table.num_rows, repeated=True)
            rows = load_alerts(conn, ((f.instrument, f.kind) for f in findings))
            for f in findings:
                key = (f.instrument, f.kind)
                before = rows.get(key)
                rows[key] = merge_alert(before, f, segment, now)
                if before is None:
                    raised.append(_alert(rows[key]))
                else:
                    updated += 1
            save_alerts(conn, [rows[(f.instrument, f.kind)] for f in findings])
            save_state(
                conn, [keys[i] for i in result.updated.tolist()], result.last_t, result.last_value
            )
            save_segment(
                conn,
                segment,
                readings=table.num_rows,
                late=result.late,
                alerts=len(findings),
                at=now,
            )
            drop_queued(conn, segment)  # taken in: no longer owed (StreamWorker's queue)
        self.segments_observed += 1
        self.readings_observed += table.num_rows
        for a in raised:
            if self.on_alert is not None:
                try:
                    self.on_alert(a)
                except Exception:
                    log.exception("publishing stream alert %s/%s failed", a.instrument, a.kind)
        return Observed(
            segment=segment,
            readings=table.num_rows,
            late=result.late,
            registers=len(keys),
            raised=tuple(raised),
            updated=updated,
        )


# -- the queue ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamBacklog:
    """What the monitor still owes: segments committed and not taken in, and the poisoned
    ones (failed their last try; kept with their error, not tried again)."""

    queued: int
    queued_readings: int
    poisoned: tuple[Queued, ...] = ()


def stream_backlog(node: Node) -> StreamBacklog:
    """The node's streaming backlog (its operator's view: segment ids and errors)."""
    with node.db.read() as conn:
        queued, readings, _ = queue_counts(conn)
        return StreamBacklog(
            queued=queued, queued_readings=readings, poisoned=tuple(poisoned_rows(conn))
        )


# -- reading the alerts ----------------------------------------------------------------------


def stream_alert_json(alert: StreamAlert) -> dict[str, Any]:
    """The wire form (API and ``metrocloud monitor alerts --json``)."""
    return {
        "instrument": alert.instrument,
        "kind": alert.kind,
        "severity": alert.severity,
        "at": iso_ms(round(alert.at.timestamp() * 1000)),
        "last_at": iso_ms(round(alert.last_at.timestamp() * 1000)),
        "count": alert.count,
        "evidence": dict(alert.evidence),
        "raised_at": iso_ms(round(alert.raised_at.timestamp() * 1000)),
        "updated_at": iso_ms(round(alert.updated_at.timestamp() * 1000)),
        "segment": alert.segment,
    }


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in STREAM_KINDS:
        raise InvalidInput(
            f"streaming mode raises no {kind!r} alert; its kinds: {', '.join(STREAM_KINDS)}"
        )


def list_stream_alerts(
    node: Node, *, instrument: str | None = None, kind: str | None = None
) -> list[StreamAlert]:
    """Every streaming alert of the node (its operator's view), by (instrument, kind)."""
    _check_kind(kind)
    a = stream_alerts.c
    where: ColumnElement[bool] = true()
    if instrument is not None:
        where = where & (a.instrument == instrument)
    if kind is not None:
        where = where & (a.kind == kind)
    with node.db.read() as conn:
        rows = conn.execute(select(stream_alerts).where(where).order_by(a.instrument, a.kind))
        return [_alert(r._mapping) for r in rows]


def party_stream_alerts(
    node: Node,
    actor: Actor,
    *,
    instrument: str | None = None,
    kind: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> Page[StreamAlert]:
    """One page of the streaming alerts of the instruments ``actor`` may read
    (:mod:`metrocloud.services.visibility`), by (instrument, kind); reads of another
    party's instruments land in its access log."""
    check_limit(limit)
    refuse_node_admin(actor)
    _check_kind(kind)
    after = decode_cursor(cursor, str, str)
    i, a = instruments.c, stream_alerts.c
    with node.db.read() as conn:
        if instrument is not None:
            check_can_read(conn, actor, instrument_row(conn, instrument))
            where: ColumnElement[bool] = a.instrument == instrument
        else:
            where = visible_filter(conn, actor)
        if kind is not None:
            where = where & (a.kind == kind)
        stmt = select_alerts(where, after, limit + 1, i.id, i.manufacturer_id, i.operator_id)
        rows = conn.execute(stmt.join(instruments, i.id == a.instrument)).all()
        by_grant = granted_ids(conn, actor, list(rows))
    items = [_alert(r._mapping) for r in rows[:limit]]
    nxt = (
        encode_cursor([rows[limit - 1].instrument, rows[limit - 1].kind])
        if len(rows) > limit
        else None
    )
    seen = {r.id: r for r in rows[:limit]}
    node.access_log.append(
        access_rows(
            actor,
            node.timestamp(),
            "stream_alerts.read",
            "instrument",
            [(x, (r.manufacturer_id, r.operator_id)) for x, r in seen.items()],
            via_grant=[x for x in seen if x in by_grant],
        )
    )
    return Page(items, nxt)
