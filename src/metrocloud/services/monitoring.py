"""Fleet monitoring in batch mode: alerts from the lake (through the engine) and the registry.

:func:`detect` runs every detector over a time window and returns :class:`Alert` rows, one
per instrument and finding, with the first evidence time and the numbers that justify it
(docs/monitoring.md). The lake is read only through the
:class:`~metrocloud.lake.engine.LakeEngine` methods, so that another engine (Spark) answers
the same; the registry through SQLAlchemy Core.

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

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final, Literal

from sqlalchemy import func, select

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.mpe import Line, MpeRule, Zone, in_service_factor, mpe
from metrocloud.lake.engine import REFERENCE_SUFFIX, Bound, LakeEngine, time_bounds
from metrocloud.services._peer_deviation import PeerThresholds, peer_deviation_steps
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, events, instruments, intake_flags, quarantine

__all__ = [
    "ALERT_KINDS",
    "DEFAULT_THRESHOLDS",
    "Alert",
    "DailyError",
    "Severity",
    "Thresholds",
    "detect",
    "first_evidence",
    "in_service_mpe",
    "is_counter_reset",
    "max_gap",
    "nominal_interval",
    "reference_errors",
    "theil_sen",
]

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


DEFAULT_THRESHOLDS: Final = Thresholds()


@dataclass(frozen=True, slots=True)
class DailyError:
    """The relative error (percent) of a register over the span between two reference
    readings (consumption-weighted), stamped at the span's middle."""

    t: datetime
    error_percent: float
    reference_increment: float


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


# -- small statistics ------------------------------------------------------------------------


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: the median of the pairwise slopes, and the
    median of ``y - slope * x``. Needs two distinct x."""
    if len(xs) != len(ys):
        raise InvalidInput(f"theil_sen: {len(xs)} x but {len(ys)} y")
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    if not slopes:
        raise InvalidInput("theil_sen needs at least two distinct x values")
    slope = statistics.median(slopes)
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))
    return slope, intercept


def in_service_mpe(category: str, accuracy_class: str, country: str) -> Decimal:
    """The in-service MPE (percent) in normal operation (upper zone, 20 °C, line A) of an
    instrument of ``category`` and ``accuracy_class`` in ``country``; DE-EV: its MI-003
    meter."""
    cat = InstrumentCategory(category)
    rule: MpeRule
    if cat is InstrumentCategory.MI_005:
        rule = mpe(cat, accuracy_class, line=Line.A)
    elif cat is InstrumentCategory.MI_002:
        rule = mpe(cat, accuracy_class, zone=Zone.UPPER)
    elif cat is InstrumentCategory.DE_EV:
        rule = mpe(InstrumentCategory.MI_003, accuracy_class, zone=Zone.UPPER, temperature=20)
    else:
        rule = mpe(cat, accuracy_class, zone=Zone.UPPER, temperature=20)
    return rule.limit(in_service_factor(country))


def reference_errors(
    engine: LakeEngine, start: Bound = None, end: Bound = None
) -> dict[str, list[DailyError]]:
    """Per instrument with reference readings: the daily errors of its register, in time
    order (spans where the reference did not advance are left out)."""
    out: dict[str, list[DailyError]] = defaultdict(list)
    previous: dict[tuple[str, str], tuple[datetime, float, float]] = {}
    for row in engine.reference_pairs(start, end).to_pylist():
        key = (row["instrument"], row["quantity"])
        ref, reg = row["reference"], row["register"]
        if key in previous:
            t0, r0, m0 = previous[key]
            dr = ref - r0
            if dr > 0:
                mid = t0 + (row["t"] - t0) / 2
                out[key[0]].append(DailyError(mid, 100.0 * ((reg - m0) / dr - 1.0), dr))
        previous[key] = (row["t"], ref, reg)
    return dict(out)


def _years(t: datetime, origin: datetime) -> float:
    return (t - origin).total_seconds() / (365 * 86400)


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


def _counters(
    engine: LakeEngine, reg: Mapping[str, _Instrument], start: Bound, end: Bound, th: Thresholds
) -> list[Alert]:
    out: list[Alert] = []
    categories = sorted({i.category for i in reg.values()})
    for cat in categories:
        interval = _INTERVALS.get(cat)
        found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in engine.counter_anomalies(
            start, end, category=cat, max_gap=max_gap(cat, th)
        ).to_pylist():
            if row["quantity"].endswith(REFERENCE_SUFFIX):
                continue
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


def _clock(
    engine: LakeEngine, reg: Mapping[str, _Instrument], start: Bound, end: Bound, th: Thresholds
) -> list[Alert]:
    """Readings off the nominal grid: 15 minutes for interval registers (their readings lie
    on it), whole seconds for transaction registers (their devices stamp whole seconds)."""
    out: list[Alert] = []
    for cat in sorted({i.category for i in reg.values()}):
        interval = _INTERVALS.get(cat)
        grid = timedelta(minutes=15) if interval else timedelta(seconds=1)
        days: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in engine.grid_offsets(start, end, category=cat, grid=grid).to_pylist():
            days[row["instrument"]].append(row)
        for ins, rows in sorted(days.items()):
            run: list[dict[str, Any]] = []
            for row in rows:
                bad = (
                    abs(row["median_offset_ms"]) > th.clock_offset_ms
                    if interval
                    else row["off_grid"] > th.clock_off_grid_share * row["readings"]
                )
                run = [*run, row] if bad else []
                if len(run) >= th.clock_days:
                    evidence: dict[str, Any] = {
                        "grid_s": grid.total_seconds(),
                        "days_off_grid": sum(1 for _ in run),
                        "first_day": run[0]["day"].isoformat(),
                        "off_grid_share": run[-1]["off_grid"] / run[-1]["readings"],
                    }
                    if interval:
                        offs = [r["median_offset_ms"] for r in rows]
                        xs = [float(i) for i in range(len(offs))]
                        evidence["seconds_per_day"] = theil_sen(xs, offs)[0] / 1000.0
                        evidence["offset_s"] = run[-1]["median_offset_ms"] / 1000.0
                    at = datetime.combine(run[0]["day"], datetime.min.time(), UTC)
                    out.append(Alert(ins, "clock_drift", "warning", at, evidence))
                    break
    return out


def _stuck(
    engine: LakeEngine, reg: Mapping[str, _Instrument], start: Bound, end: Bound, th: Thresholds
) -> list[Alert]:
    out: list[Alert] = []
    # Runs shorter than the cutoff cannot change an alert: the limit is
    # max(stuck_min, factor x p90) and an alert needs a run beyond it, so a run shorter than
    # stuck_min / max(factor, 1) is never one; and the p90 of the peers' longest runs only
    # matters when factor x p90 > stuck_min, that is when p90 >= the cutoff, and the p90
    # of a list in which the values below the cutoff are replaced by 0 is then the same.
    # So the engine returns only the runs that can matter, not one row per reading.
    cutoff = th.stuck_min / max(th.stuck_factor, 1.0)
    for cat in sorted({i.category for i in reg.values()}):
        longest: dict[str, dict[str, Any]] = {}
        for row in engine.flat_runs(start, end, category=cat, min_duration=cutoff).to_pylist():
            if row["readings"] < th.stuck_readings:
                continue
            cur = longest.get(row["instrument"])
            if cur is None or row["last_t"] - row["first_t"] > cur["last_t"] - cur["first_t"]:
                longest[row["instrument"]] = row
        peers = [i for i in reg.values() if i.category == cat]
        durations = sorted((r["last_t"] - r["first_t"]).total_seconds() for r in longest.values())
        durations += [0.0] * (len(peers) - len(durations))
        durations.sort()
        p90 = durations[min(len(durations) - 1, int(0.9 * len(durations)))] if durations else 0.0
        limit = max(th.stuck_min.total_seconds(), th.stuck_factor * p90)
        for ins, row in sorted(longest.items()):
            seconds = (row["last_t"] - row["first_t"]).total_seconds()
            if seconds > limit:
                out.append(
                    Alert(
                        ins,
                        "stuck_register",
                        "critical",
                        row["first_t"],
                        {
                            "flat_hours": seconds / 3600,
                            "readings": row["readings"],
                            "value": row["value"],
                            "peer_limit_hours": limit / 3600,
                            "peers": len(peers),
                        },
                    )
                )
    return out


def _step(errors: Sequence[DailyError]) -> tuple[int, float] | None:
    """The split (index of the first day after) with the largest drop of the median daily
    error, and the drop (percentage points, negative: registers less)."""
    ys = [e.error_percent for e in errors]
    n = len(ys)
    best: tuple[int, float] | None = None
    score = 0.0
    total = sum(ys)
    head = 0.0
    for k in range(1, n - 1):
        head += ys[k - 1]
        if k < 2:
            continue
        # the split: the classic (mean) two-sample statistic; the jump: medians (robust)
        weighted = abs(head / k - (total - head) / (n - k)) * math.sqrt(k * (n - k) / n)
        if best is None or weighted > score:
            best, score = (k, statistics.median(ys[k:]) - statistics.median(ys[:k])), weighted
    return best


def _metrology(
    node: Node,
    engine: LakeEngine,
    reg: Mapping[str, _Instrument],
    start: Bound,
    end: Bound,
    th: Thresholds,
) -> list[Alert]:
    out: list[Alert] = []
    for ins, errors in sorted(reference_errors(engine, start, end).items()):
        info = reg.get(ins)
        if info is None or len(errors) < th.min_days:
            continue
        limit = float(in_service_mpe(info.category, info.accuracy_class, node.country))
        step = _step(errors)
        if step is not None and step[1] < -th.step_points:
            k, jump = step
            after = [e.error_percent for e in errors[k:]]
            before = statistics.median(e.error_percent for e in errors[:k])
            ys = [e.error_percent for e in errors]
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
                        errors[k].t - timedelta(hours=12),
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
                        errors[k].t - timedelta(hours=12),
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
        origin = errors[0].t
        xs = [_years(e.t, origin) for e in errors]
        ys = [e.error_percent for e in errors]
        slope, intercept = theil_sen(xs, ys)
        current = intercept + slope * xs[-1]
        if abs(current) > th.drift_fraction * limit:
            severity: Severity = "critical" if abs(current) > limit else "warning"
            # first evidence: when the fitted line passed the threshold
            at = errors[-1].t
            if slope != 0:
                x_at = (math.copysign(th.drift_fraction * limit, current) - intercept) / slope
                if 0 <= x_at <= xs[-1]:
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
                        "days": len(errors),
                    },
                )
            )
    return out


def detect(
    node: Node,
    engine: LakeEngine,
    *,
    start: Bound = None,
    end: Bound = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Alert]:
    """Every alert of the registry's instruments over [start, end), by (instrument, kind)."""
    lo, hi = time_bounds(start, end)
    reg = _registry(node)
    alerts: list[Alert] = []
    alerts += _security(node, lo, hi)
    alerts += _counters(engine, reg, lo, hi, thresholds)
    alerts += _clock(engine, reg, lo, hi, thresholds)
    alerts += _stuck(engine, reg, lo, hi, thresholds)
    alerts += _metrology(node, engine, reg, lo, hi, thresholds)
    cats = {i.category for i in reg.values()}
    for s in peer_deviation_steps(engine, cats, lo, hi, registered=reg, th=thresholds.peer):
        alerts.append(Alert(s.instrument, "peer_deviation", s.severity, s.at, s.evidence()))
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
