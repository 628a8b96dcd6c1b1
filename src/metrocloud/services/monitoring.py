"""Fleet monitoring in batch mode: alerts from the lake (through the engine) and the registry.

:func:`detect` runs every detector over a time window and returns :class:`Alert` rows, one
per instrument and finding, with the first evidence time and the numbers that justify it
(docs/monitoring.md). The lake is read only through the
:class:`~metrocloud.lake.engine.LakeEngine` methods, so that another engine (Spark) answers
the same; the registry through SQLAlchemy Core. The numbers behind the metrology detectors
(Theil-Sen, the step of the daily errors, the daily errors against the reference, the
in-service MPE) live in services/_monitoring_stats.py and are re-exported here.

Detectors (alert ``kind``, severity):

- integrity: ``counter_reset`` (critical; a regression to below ``reset_fraction`` of the
  previous value), ``reverse_flow`` (critical; other regressions), ``gap`` (warning; more
  than two nominal intervals without a reading, interval registers only), ``clock_drift``
  (warning; readings off the nominal time grid), ``intake_quarantine`` (warning; quarantined
  batches by reason other than unapproved software);
- metrology: ``drift`` (warning beyond ``drift_fraction`` of the in-service MPE, critical
  beyond it; from reference readings, Theil-Sen), ``under_registration`` (critical; a step in
  the daily error against the reference), ``stuck_register`` (critical; a flat register for
  longer than the category's peers ever are), ``peer_deviation`` (warning / critical by size;
  no reference meter: a persistent step of consumption against the category's peers,
  services/_peer_deviation.py);
- security: ``seal_broken`` and ``tamper_detected`` (critical; life-cycle events),
  ``unapproved_software`` (critical; intake flags and quarantine).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select

from metrocloud.lake.engine import (
    REFERENCE_PAIRS_SCHEMA,
    REFERENCE_SUFFIX,
    Bound,
    LakeEngine,
    time_bounds,
)
from metrocloud.services._balance import (
    AreaStep,
    BalanceArea,
    BalanceThresholds,
    balance_findings_of,
)
from metrocloud.services._monitoring_stats import (
    DailyError,
    _error_series,
    _Series,
    _step,
    errors_of_pairs,
    in_service_mpe,
    reference_errors,
    theil_sen,
)
from metrocloud.services._peer_deviation import PeerStep, PeerThresholds, peer_steps_of
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, events, instruments, intake_flags, quarantine

__all__ = [
    "ALERT_KINDS",
    "DEFAULT_THRESHOLDS",
    "STEPS",
    "Alert",
    "BalanceArea",
    "DailyError",
    "Severity",
    "Thresholds",
    "balance_areas",
    "clock_grid",
    "detect",
    "errors_of_pairs",
    "first_evidence",
    "in_service_mpe",
    "is_counter_reset",
    "joined_reference_pairs",
    "max_gap",
    "nominal_interval",
    "reference_errors",
    "stuck_cutoff",
    "theil_sen",
]

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]

ALERT_KINDS: Final = (
    "counter_reset",
    "reverse_flow",
    "gap",
    "clock_drift",
    "intake_quarantine",
    "drift",
    "under_registration",
    "stuck_register",
    "peer_deviation",
    "seal_broken",
    "tamper_detected",
    "unapproved_software",
)

#: nominal reading interval of the interval (snapshot) registers per category
_INTERVALS: Final[Mapping[str, timedelta]] = {
    "MI-001": timedelta(hours=1),
    "MI-002": timedelta(hours=1),
    "MI-003": timedelta(minutes=15),
}
_UNAPPROVED: Final = "unapproved-software"


@dataclass(frozen=True, slots=True)
class Alert:
    """One finding about one instrument."""

    instrument: str
    kind: str
    severity: Severity
    #: first evidence (UTC)
    at: datetime
    #: the numbers that justify it
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The detectors' knobs (defaults tuned on simulated fleets, docs/monitoring.md)."""

    #: a regression to below this fraction of the previous value is a reset
    reset_fraction: float = 0.1
    #: a gap: more than this many nominal intervals without a reading
    gap_intervals: float = 2.0
    #: clock: |median offset from the grid| above this on a day, or off-grid share above
    clock_offset_ms: float = 1000.0
    clock_off_grid_share: float = 0.5
    #: clock: days in a row that must show it
    clock_days: int = 2
    #: drift: warning beyond this fraction of the in-service MPE, critical beyond the MPE
    drift_fraction: float = 0.5
    #: drift: at least this many daily errors
    min_days: int = 5
    #: under-registration: a step of the daily error (percentage points) beyond this
    step_points: float = 5.0
    #: stuck: flat for longer than max(stuck_min, stuck_factor x p90 of the peers' longest)
    stuck_min: timedelta = timedelta(hours=2)
    stuck_factor: float = 2.0
    stuck_readings: int = 3
    #: stuck (against the reference): the daily error stays at or below this after a step
    stuck_error_percent: float = -90.0
    #: peer deviation (instruments without a reference meter)
    peer: PeerThresholds = field(default_factory=PeerThresholds)
    #: balance areas (an area meter against the sum of its members)
    balance: BalanceThresholds = field(default_factory=BalanceThresholds)


DEFAULT_THRESHOLDS: Final = Thresholds()


# -- definitions shared with streaming mode (services/streaming.py) ------------------------


def nominal_interval(category: str) -> timedelta | None:
    """The nominal reading interval of the interval registers of ``category``; None for
    transaction registers (fuel dispensers, chargers: a reading per transaction)."""
    return _INTERVALS.get(category)


def max_gap(category: str, th: Thresholds = DEFAULT_THRESHOLDS) -> timedelta:
    """The longest time between two readings of a register of ``category`` that is not a
    ``gap``: ``gap_intervals`` nominal intervals for interval registers; transaction
    registers (no nominal interval) have no gap."""
    interval = _INTERVALS.get(category)
    return interval * th.gap_intervals if interval else timedelta(days=3650)


def is_counter_reset(previous_value: Any, value: Any, th: Thresholds = DEFAULT_THRESHOLDS) -> Any:
    """Whether a regression from ``previous_value`` to ``value`` is a ``counter_reset`` (to
    below ``reset_fraction`` of a positive previous value) rather than a ``reverse_flow``.
    Elementwise on numpy arrays, so that both modes apply one definition."""
    return (previous_value > 0) & (value <= th.reset_fraction * previous_value)


def first_evidence(kind: str, row: Mapping[str, Any]) -> tuple[datetime, str]:
    """The sort key that picks an alert's first counter anomaly among an instrument's
    registers: its evidence time (a gap's start, a regression's reading), then the quantity."""
    return (row["previous_t"] if kind == "gap" else row["t"]), row["quantity"]


# -- the detectors ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Instrument:
    id: str
    category: str
    certificate: str
    accuracy_class: str


def _registry(node: Node) -> dict[str, _Instrument]:
    stmt = select(
        instruments.c.id,
        instruments.c.category,
        instruments.c.certificate_id,
        certificates.c.accuracy_class,
    ).join(certificates, certificates.c.id == instruments.c.certificate_id)
    with node.db.read() as conn:
        return {
            r.id: _Instrument(r.id, r.category, r.certificate_id, r.accuracy_class)
            for r in conn.execute(stmt)
        }


def balance_areas(node: Node) -> dict[str, BalanceArea]:
    """The balance areas the registry records: per instrument its latest
    ``put_into_service`` or ``relocated`` event's ``details.balance_area`` (``balance_role``
    ``"area_meter"`` for the area's meter). Areas without a meter or without members are
    left out."""
    latest: dict[str, tuple[int, Mapping[str, Any]]] = {}
    stmt = select(events.c.instrument_id, events.c.seq, events.c.details).where(
        events.c.kind.in_(("put_into_service", "relocated"))
    )
    with node.db.read() as conn:
        for ins, seq, details in conn.execute(stmt):
            if ins not in latest or seq > latest[ins][0]:
                latest[ins] = (seq, details or {})
    meters: dict[str, str] = {}
    members: dict[str, list[str]] = defaultdict(list)
    for ins, (_seq, details) in latest.items():
        area = details.get("balance_area")
        if not isinstance(area, str) or not area:
            continue
        if details.get("balance_role") == "area_meter":
            meters[area] = ins
        else:
            members[area].append(ins)
    return {
        a: BalanceArea(a, meters[a], tuple(sorted(members[a])))
        for a in sorted(meters)
        if members.get(a)
    }


def _parse(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _in(t: datetime, lo: datetime | None, hi: datetime | None) -> bool:
    return (lo is None or t >= lo) and (hi is None or t < hi)


def _security(node: Node, lo: datetime | None, hi: datetime | None) -> list[Alert]:
    out: list[Alert] = []
    first: dict[tuple[str, str], datetime] = {}
    with node.db.read() as conn:
        rows = conn.execute(
            select(events.c.instrument_id, events.c.kind, events.c.occurred_at).where(
                events.c.kind.in_(("seal_broken", "tamper_detected"))
            )
        ).all()
        for r in rows:
            t = _parse(r.occurred_at)
            if _in(t, lo, hi) and (
                (r.instrument_id, r.kind) not in first or t < first[(r.instrument_id, r.kind)]
            ):
                first[(r.instrument_id, r.kind)] = t
        for (ins, kind), t in sorted(first.items()):
            out.append(Alert(ins, kind, "critical", t, {"event": kind}))
        # unapproved software: the intake's flags and its quarantine
        flagged: dict[str, list[datetime]] = defaultdict(list)
        for flag in conn.execute(
            select(intake_flags.c.instrument_id, intake_flags.c.at).where(
                intake_flags.c.kind == _UNAPPROVED
            )
        ):
            flagged[flag.instrument_id].append(_parse(flag.at))
        counts: dict[tuple[str, str], tuple[int, str]] = {}
        for q in conn.execute(
            select(
                quarantine.c.instrument_id,
                quarantine.c.reason,
                func.count(),
                func.min(quarantine.c.received_at),
            )
            .where(quarantine.c.instrument_id.is_not(None))
            .group_by(quarantine.c.instrument_id, quarantine.c.reason)
        ):
            counts[(q[0], q[1])] = (int(q[2]), q[3])
    for ins in sorted(set(flagged) | {i for i, reason in counts if reason == _UNAPPROVED}):
        n, first_q = counts.get((ins, _UNAPPROVED), (0, None))
        times = flagged.get(ins, []) + ([_parse(first_q)] if first_q else [])
        out.append(
            Alert(
                ins,
                "unapproved_software",
                "critical",
                min(times),
                {"quarantined_batches": n, "intake_flags": len(flagged.get(ins, []))},
            )
        )
    for (ins, reason), (n, first_q) in sorted(counts.items()):
        if reason != _UNAPPROVED:
            out.append(
                Alert(
                    ins,
                    "intake_quarantine",
                    "warning",
                    _parse(first_q),
                    {"reason": reason, "quarantined_batches": n},
                )
            )
    return out


def _counters(table: pa.Table, category: str, th: Thresholds) -> list[Alert]:
    """``counter_reset``, ``reverse_flow`` and ``gap`` of one category's registers (reference
    quantities left out) from its ``counter_anomalies``."""
    out: list[Alert] = []
    interval = _INTERVALS.get(category)
    registers = pc.invert(pc.ends_with(table.column("quantity"), REFERENCE_SUFFIX))
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in table.filter(registers).to_pylist():
        prev = row["previous_value"]
        kind = row["kind"]
        if kind == "regression":
            reset = bool(is_counter_reset(prev, row["value"], th))
            kind = "counter_reset" if reset else "reverse_flow"
        found[(row["instrument"], kind)].append(row)
    for (ins, kind), rows in sorted(found.items()):
        first = min(rows, key=partial(first_evidence, kind))
        evidence: dict[str, Any] = {"count": len(rows), "quantity": first["quantity"]}
        if kind == "gap":
            longest = max(rows, key=lambda r: r["t"] - r["previous_t"])
            evidence.update(
                longest_s=(longest["t"] - longest["previous_t"]).total_seconds(),
                nominal_interval_s=interval.total_seconds() if interval else None,
            )
            severity: Severity = "warning"
            at = first["previous_t"]
        else:
            evidence.update(
                previous_value=first["previous_value"],
                value=first["value"],
                total_decrease=sum(r["previous_value"] - r["value"] for r in rows),
            )
            severity = "critical"
            at = first["t"]
        out.append(Alert(ins, kind, severity, at, evidence))
    return out


def clock_grid(category: str) -> timedelta:
    """The time grid the readings of ``category`` lie on: 15 minutes for interval
    registers, whole seconds for transaction registers (their devices stamp whole seconds)."""
    return timedelta(minutes=15) if category in _INTERVALS else timedelta(seconds=1)


def _clock(table: pa.Table, category: str, th: Thresholds) -> list[Alert]:
    """Readings off the nominal grid (:func:`clock_grid`) on ``clock_days`` days in a row,
    from one category's ``grid_offsets``. The days of an instrument are taken in the table's
    order (its registers one after the other); the first such run is the alert."""
    out: list[Alert] = []
    if table.num_rows == 0:
        return out
    interval = _INTERVALS.get(category)
    grid = clock_grid(category)
    offset = table.column("median_offset_ms").to_numpy()
    off_grid = table.column("off_grid").to_numpy()
    readings = table.column("readings").to_numpy()
    bad = (
        np.abs(offset) > th.clock_offset_ms
        if interval
        else off_grid > th.clock_off_grid_share * readings
    )
    ins = table.column("instrument")
    new = np.ones(table.num_rows, bool)
    new[1:] = np.asarray(pc.not_equal(ins.slice(1), ins.slice(0, table.num_rows - 1)))
    # the length of the run of bad days ending at each row (0 on a good day)
    k = np.arange(table.num_rows)
    before = np.maximum.accumulate(np.where(~bad, k, np.where(new, k - 1, -1)))
    run = np.where(bad, k - before, 0)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], table.num_rows)
    hits = np.flatnonzero(run >= th.clock_days)
    first_hit = hits[np.unique(np.searchsorted(ends, hits, side="right"), return_index=True)[1]]
    days = table.column("day")
    names = ins.to_pylist()
    for j in first_hit.tolist():
        begin = j - int(run[j]) + 1
        evidence: dict[str, Any] = {
            "grid_s": grid.total_seconds(),
            "days_off_grid": int(run[j]),
            "first_day": days[begin].as_py().isoformat(),
            "off_grid_share": int(off_grid[j]) / int(readings[j]),
        }
        if interval:
            lo = int(starts[np.searchsorted(starts, j, side="right") - 1])
            hi = int(ends[np.searchsorted(starts, j, side="right") - 1])
            offs = offset[lo:hi].tolist()
            xs = [float(i) for i in range(len(offs))]
            evidence["seconds_per_day"] = theil_sen(xs, offs)[0] / 1000.0
            evidence["offset_s"] = float(offset[j]) / 1000.0
        at = datetime.combine(days[begin].as_py(), datetime.min.time(), UTC)
        out.append(Alert(names[j], "clock_drift", "warning", at, evidence))
    return out


def stuck_cutoff(th: Thresholds = DEFAULT_THRESHOLDS) -> timedelta:
    """The shortest flat run that can matter to ``stuck_register``.

    Runs shorter than the cutoff cannot change an alert: the limit is
    max(stuck_min, factor x p90) and an alert needs a run beyond it, so a run shorter than
    stuck_min / max(factor, 1) is never one; and the p90 of the peers' longest runs only
    matters when factor x p90 > stuck_min, that is when p90 >= the cutoff, and the p90 of a
    list in which the values below the cutoff are replaced by 0 is then the same. So the
    engine returns only the runs that can matter, not one row per reading."""
    return th.stuck_min / max(th.stuck_factor, 1.0)


def _stuck(
    table: pa.Table, category: str, reg: Mapping[str, _Instrument], th: Thresholds
) -> list[Alert]:
    """``stuck_register`` from one category's ``flat_runs`` (at least ``stuck_cutoff``):
    each instrument's longest run of at least ``stuck_readings`` readings (the first of
    equal ones) against its peers' 90th percentile."""
    out: list[Alert] = []
    table = table.filter(pc.greater_equal(table.column("readings"), th.stuck_readings))
    first_t = table.column("first_t").cast(pa.int64()).to_numpy()
    ms = table.column("last_t").cast(pa.int64()).to_numpy() - first_t
    seconds = ms / 1000.0  # as timedelta.total_seconds() of whole milliseconds
    codes = pc.dictionary_encode(table.column("instrument")).combine_chunks().indices
    ins = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    # per instrument its longest run, the first of equal ones (the table is in order)
    order = np.lexsort((np.arange(ins.size), -ms, ins))
    first = order[np.unique(ins[order], return_index=True)[1]]
    peers = sum(1 for i in reg.values() if i.category == category)
    durations = sorted(seconds[first].tolist())
    durations += [0.0] * (peers - len(durations))
    durations.sort()
    p90 = durations[min(len(durations) - 1, int(0.9 * len(durations)))] if durations else 0.0
    limit = max(th.stuck_min.total_seconds(), th.stuck_factor * p90)
    for j in first[seconds[first] > limit].tolist():
        row = table.slice(j, 1).to_pylist()[0]
        out.append(
            Alert(
                row["instrument"],
                "stuck_register",
                "critical",
                row["first_t"],
                {
                    "flat_hours": float(seconds[j]) / 3600,
                    "readings": row["readings"],
                    "value": row["value"],
                    "peer_limit_hours": limit / 3600,
                    "peers": peers,
                },
            )
        )
    return sorted(out, key=lambda a: a.instrument)


def _metrology(
    node: Node, series: Mapping[str, _Series], reg: Mapping[str, _Instrument], th: Thresholds
) -> list[Alert]:
    out: list[Alert] = []
    for ins, errors in sorted(series.items()):
        info = reg.get(ins)
        if info is None or errors.t_us.size < th.min_days:
            continue
        limit = float(in_service_mpe(info.category, info.accuracy_class, node.country))
        ys = errors.error_percent.tolist()
        step = _step(ys)
        if step is not None and step[1] < -th.step_points:
            k, jump = step
            after = ys[k:]
            before = statistics.median(ys[:k])
            # sharp: the days around the split carry most of it (a fast drift does not)
            local = statistics.median(ys[k + 1 : k + 4] or ys[k:]) - statistics.median(
                ys[max(0, k - 3) : k]
            )
            # persistent: most days after the step stay below the level before it
            persistent = sum(1 for y in after if y < before + jump / 2) >= 0.8 * len(after)
            level = statistics.median(after)
            if persistent and local <= 0.7 * jump and level <= th.stuck_error_percent:
                # the register stopped while the reference went on: stuck to the end
                out.append(
                    Alert(
                        ins,
                        "stuck_register",
                        "critical",
                        errors.t(k) - timedelta(hours=12),
                        {
                            "error_after_percent": level,
                            "days_after": len(after),
                            "source": "reference",
                        },
                    )
                )
                continue
            if persistent and local <= 0.7 * jump:
                out.append(
                    Alert(
                        ins,
                        "under_registration",
                        "critical",
                        errors.t(k) - timedelta(hours=12),
                        {
                            "step_points": jump,
                            "error_before_percent": before,
                            "error_after_percent": statistics.median(after),
                            "ratio": (1 + statistics.median(after) / 100) / (1 + before / 100),
                            "days_after": len(after),
                            "local_step_points": local,
                        },
                    )
                )
                continue
        origin = errors.t(0)
        # years since the first, as (t - origin).total_seconds() / (365 * 86400)
        xs = (errors.t_us - errors.t_us[0]) / 1e6 / (365 * 86400)
        slope, intercept = theil_sen(xs, errors.error_percent)
        current = intercept + slope * float(xs[-1])
        if abs(current) > th.drift_fraction * limit:
            severity: Severity = "critical" if abs(current) > limit else "warning"
            # first evidence: when the fitted line passed the threshold
            at = errors.t(len(ys) - 1)
            if slope != 0:
                x_at = (math.copysign(th.drift_fraction * limit, current) - intercept) / slope
                if 0 <= x_at <= float(xs[-1]):
                    at = origin + timedelta(days=365 * x_at)
                elif x_at < 0:
                    at = origin
            out.append(
                Alert(
                    ins,
                    "drift",
                    severity,
                    at,
                    {
                        "error_percent": current,
                        "drift_percent_per_year": slope,
                        "mpe_percent": limit,
                        "days": len(ys),
                    },
                )
            )
    return out


#: the steps of :func:`detect`, as its ``timings`` name them
STEPS: Final = (
    "registry",
    "scan",
    "counters",
    "clock",
    "stuck",
    "metrology",
    "peer",
    "balance",
)


class _Stopwatch:
    """Adds each step's (wall, CPU) seconds to ``timings`` (CPU: the whole process, every
    thread; ``time.process_time``)."""

    def __init__(self, timings: dict[str, tuple[float, float]] | None) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            w, c = self.timings.get(step, (0.0, 0.0))
            self.timings[step] = (
                w + time.perf_counter() - wall,
                c + time.process_time() - cpu,
            )


def joined_reference_pairs(parts: Iterable[pa.Table]) -> pa.Table:
    """Per-category ``reference_pairs`` tables as one, in (instrument, quantity, t) order
    (an instrument has one category, so no pair is in two parts)."""
    tables = list(parts)
    joined = pa.concat_tables(tables) if tables else REFERENCE_PAIRS_SCHEMA.empty_table()
    return joined.sort_by(
        [("instrument", "ascending"), ("quantity", "ascending"), ("t", "ascending")]
    )


def detect(
    node: Node,
    engine: LakeEngine,
    *,
    start: Bound = None,
    end: Bound = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    timings: dict[str, tuple[float, float]] | None = None,
) -> list[Alert]:
    """Every alert of the registry's instruments over [start, end), by (instrument, kind).

    The lake is read once per category (:meth:`LakeEngine.monitoring_inputs`).
    ``timings``, if given, gets the (wall, CPU) seconds of each step of :data:`STEPS`."""
    th = thresholds
    step = _Stopwatch(timings)
    lo, hi = time_bounds(start, end)
    with step("registry"):
        reg = _registry(node)
        alerts: list[Alert] = _security(node, lo, hi)
        areas: dict[str, list[BalanceArea]] = defaultdict(list)
        for area in balance_areas(node).values():
            if area.meter in reg:
                areas[reg[area.meter].category].append(area)
        # area meters count what a whole area consumes: not a household among its peers
        meters = {a.meter for group in areas.values() for a in group}
        consumers = {k: v for k, v in reg.items() if k not in meters}
    counters: list[Alert] = []
    clocks: list[Alert] = []
    stuck: list[Alert] = []
    steps: list[PeerStep] = []
    balanced: list[AreaStep] = []
    pairs: list[pa.Table] = []
    for cat in sorted({i.category for i in reg.values()}):
        with step("scan"):
            got = engine.monitoring_inputs(
                lo,
                hi,
                cat,
                max_gap=max_gap(cat, th),
                grid=clock_grid(cat),
                min_duration=stuck_cutoff(th),
            )
        with step("counters"):
            counters += _counters(got.counter_anomalies, cat, th)
        with step("clock"):
            clocks += _clock(got.grid_offsets, cat, th)
        with step("stuck"):
            stuck += _stuck(got.flat_runs, cat, reg, th)
        with step("peer"):
            found = peer_steps_of(got.daily_consumption, registered=consumers, th=th.peer)
        with step("balance"):
            # a fall against the peers that the member's area balance contradicts is a
            # change of consumption, not a register counting less
            claims = {p.instrument: (p.day, p.percent) for p in found if p.percent < 0}
            findings = balance_findings_of(
                got.daily_consumption,
                areas.get(cat, []),
                interval=cat in _INTERVALS,
                th=th.balance,
                claims=claims,
            )
            balanced += findings.steps
            for p in found:
                if p.instrument in findings.contradicted:
                    log.info(
                        "peer deviation of %s set aside: its balance area says %s",
                        p.instrument,
                        findings.contradicted[p.instrument],
                    )
            steps += [p for p in found if p.instrument not in findings.contradicted]
        pairs.append(got.reference_pairs)
    with step("metrology"):
        # per category, as the engine answers them; an instrument has one category
        joined = joined_reference_pairs(pairs)
        metrology = _metrology(node, _error_series(joined), reg, th)
    alerts += counters + clocks + stuck + metrology
    for s in sorted(steps, key=lambda s: s.instrument):
        alerts.append(Alert(s.instrument, "peer_deviation", s.severity, s.at, s.evidence()))
    for b in balanced:
        alerts.append(Alert(b.instrument, "under_registration", "critical", b.at, b.evidence()))
    # one alert per instrument and kind: the first evidence
    first: dict[tuple[str, str], Alert] = {}
    for a in alerts:
        key = (a.instrument, a.kind)
        if key not in first or a.at < first[key].at:
            first[key] = a
    return sorted(first.values(), key=lambda a: (a.instrument, a.kind, a.at))


def by_instrument(alerts: Iterable[Alert]) -> dict[str, list[Alert]]:
    """Alerts grouped per instrument."""
    out: dict[str, list[Alert]] = defaultdict(list)
    for a in alerts:
        out[a.instrument].append(a)
    return dict(out)
