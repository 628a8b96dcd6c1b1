"""The risk model's arithmetic: signals, scores and their explanations (pure).

Each factor has a numeric core (used by :func:`scores` for whole fleets) and an explanation
built around the same core (used by :func:`assess`); both add the contributions in the same
order, so a score and its explanation agree to the last bit. The factors and their weights
are described in :mod:`.model` and docs/surveillance.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.services._surveillance.model import (
    DEFAULT_WEIGHTS,
    FACTORS,
    HIGH_RISK,
    Factor,
    FleetContext,
    InstrumentFacts,
    InstrumentRisk,
    OperatorStats,
    RiskWeights,
    TypeRisk,
    TypeStats,
)
from metrocloud.services.monitoring import Alert

__all__ = ["alert_signal", "assess", "assess_type", "score", "scores"]

_DAY_S = 86400.0
_YEAR_DAYS = 365.25


def _days(later: datetime, earlier: datetime) -> float:
    """Whole and partial days from ``earlier`` to ``later`` (0 if later is earlier); a time
    without a zone is UTC."""
    if earlier.tzinfo is None:
        earlier = earlier.replace(tzinfo=UTC)
    if later.tzinfo is None:
        later = later.replace(tzinfo=UTC)
    return max(0.0, (later - earlier).total_seconds() / _DAY_S)


def _alert_weights(
    alerts: Sequence[Alert], now: datetime, w: RiskWeights
) -> list[tuple[Alert, float, float]]:
    """(alert, age in days, its weight severity x 0.5^(age / half-life)), oldest first."""
    out = []
    for a in sorted(alerts, key=lambda a: (a.at, a.kind)):
        age = _days(now, a.at)
        out.append((a, age, w.severity(a.severity) * 0.5 ** (age / w.alert_half_life_days)))
    return out


def alert_signal(
    alerts: Sequence[Alert], now: datetime, weights: RiskWeights = DEFAULT_WEIGHTS
) -> tuple[float, list[dict[str, Any]]]:
    """``1 - prod(1 - severity x 0.5^(age_days / half_life))`` and each alert's part."""
    keep = 1.0
    parts = []
    for a, age, x in _alert_weights(alerts, now, weights):
        keep *= 1.0 - x
        parts.append(
            {
                "kind": a.kind,
                "severity": a.severity,
                "at": a.at.isoformat(),
                "age_days": round(age, 2),
                "weight": round(x, 6),
            }
        )
    return 1.0 - keep, parts


def _alerts_only(alerts: Sequence[Alert], now: datetime, w: RiskWeights) -> float:
    keep = 1.0
    for _, _, x in _alert_weights(alerts, now, w):
        keep *= 1.0 - x
    return 1.0 - keep


def _smoothed(count: int, n: int, prior: float, k: float) -> float:
    return (count + k * prior) / (n + k) if n + k > 0 else 0.0


_NO_TYPE = TypeStats(instruments=0, failed=0)
_NO_OPERATOR = OperatorStats(instruments=0, with_findings=0)


def _type_rate(f: InstrumentFacts, ctx: FleetContext, w: RiskWeights) -> tuple[TypeStats, float]:
    stats = ctx.types.get(f.certificate_id, _NO_TYPE)
    return stats, _smoothed(stats.failed, stats.instruments, ctx.failure_rate, w.prior_weight)


def _operator_share(
    f: InstrumentFacts, ctx: FleetContext, w: RiskWeights
) -> tuple[OperatorStats, float]:
    if f.operator_id is None:
        return _NO_OPERATOR, 0.0
    stats = ctx.operators.get(f.operator_id, _NO_OPERATOR)
    share = _smoothed(stats.with_findings, stats.instruments, ctx.finding_rate, w.prior_weight)
    return stats, share


def _unverified(f: InstrumentFacts, now: datetime) -> tuple[datetime | None, str]:
    """Since when the instrument has been without a valid verification, and why."""
    if f.unverified_since is not None:
        since = f.unverified_since
        return since, f"verification voided by {f.voided_by} on {since.date()} and not renewed"
    if f.verified_until is not None and f.verified_until < now.date():
        since = datetime.combine(f.verified_until, datetime.min.time(), now.tzinfo)
        return since, f"verification expired on {f.verified_until}"
    return None, ""


def _overdue_signal(since: datetime | None, now: datetime, w: RiskWeights) -> float:
    if since is None:
        return 0.0
    return 0.5 + 0.5 * min(1.0, _days(now, since) / w.overdue_full_days)


def _cert_status(f: InstrumentFacts, ctx: FleetContext, today: date) -> CertificateStatus:
    cert = ctx.certificates.get(f.certificate_id)
    if cert is None:
        return CertificateStatus.VALID
    return effective_status(cert.status, cert.valid_until, today)


def _cert_signal(status: CertificateStatus, w: RiskWeights) -> float:
    if status is CertificateStatus.SUSPENDED:
        return w.suspended
    if status is CertificateStatus.WITHDRAWN:
        return w.withdrawn
    if status is CertificateStatus.EXPIRED:
        return w.expired
    return 0.0


def _years(f: InstrumentFacts, now: datetime) -> float:
    return _days(now, f.placed_at or f.registered_at) / _YEAR_DAYS


def _signals(
    f: InstrumentFacts, ctx: FleetContext, w: RiskWeights, now: datetime
) -> tuple[float, float, float, float, float, float]:
    """The six signals in :data:`FACTORS` order."""
    return (
        _alerts_only(f.alerts, now, w),
        _type_signal(f, ctx, w),
        _operator_signal(f, ctx, w),
        _overdue_signal(_unverified(f, now)[0], now, w),
        _cert_signal(_cert_status(f, ctx, now.date()), w),
        min(1.0, _years(f, now) / w.age_full_years),
    )


def _type_signal(f: InstrumentFacts, ctx: FleetContext, w: RiskWeights) -> float:
    return min(1.0, _type_rate(f, ctx, w)[1] / w.failure_saturation)


def _operator_signal(f: InstrumentFacts, ctx: FleetContext, w: RiskWeights) -> float:
    return min(1.0, _operator_share(f, ctx, w)[1] / w.history_saturation)


def _total(w: RiskWeights, signals: Sequence[float]) -> float:
    total = 0.0
    for weight, signal in zip(_weights(w), signals, strict=True):
        total += weight * signal
    return min(1.0, max(0.0, total))


def _weights(w: RiskWeights) -> tuple[float, ...]:
    return (w.alerts, w.type_failures, w.operator_history, w.verification, w.certificate, w.age)


def score(
    facts: InstrumentFacts,
    context: FleetContext,
    *,
    now: datetime,
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> float:
    """The instrument's score alone (what :func:`assess` explains)."""
    return _total(weights, _signals(facts, context, weights, now))


def scores(
    facts: Sequence[InstrumentFacts],
    context: FleetContext,
    *,
    now: datetime,
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> list[float]:
    """:func:`score` of each instrument, the type, operator and certificate signals computed
    once per type, operator and certificate (they depend on nothing else)."""
    w = weights
    today = now.date()
    per_type: dict[str, float] = {}
    per_operator: dict[str | None, float] = {}
    per_cert: dict[str, float] = {}
    out = []
    for f in facts:
        t = per_type.get(f.certificate_id)
        if t is None:
            t = per_type[f.certificate_id] = _type_signal(f, context, w)
        o = per_operator.get(f.operator_id)
        if o is None:
            o = per_operator[f.operator_id] = _operator_signal(f, context, w)
        c = per_cert.get(f.certificate_id)
        if c is None:
            c = per_cert[f.certificate_id] = _cert_signal(_cert_status(f, context, today), w)
        signals = (
            _alerts_only(f.alerts, now, w) if f.alerts else 0.0,
            t,
            o,
            _overdue_signal(_unverified(f, now)[0], now, w),
            c,
            min(1.0, _years(f, now) / w.age_full_years),
        )
        out.append(_total(w, signals))
    return out


def _explain(
    f: InstrumentFacts, ctx: FleetContext, w: RiskWeights, now: datetime
) -> tuple[Factor, ...]:
    a_signal, parts = alert_signal(f.alerts, now, w)
    if parts:
        top = max(parts, key=lambda p: p["weight"])
        more = f" and {len(parts) - 1} more" if len(parts) > 1 else ""
        a_reason = f"{top['severity']} alert {top['kind']} {top['age_days']:.0f} days ago{more}"
    else:
        a_reason = "no monitoring alert"
    t_stats, rate = _type_rate(f, ctx, w)
    o_stats, share = _operator_share(f, ctx, w)
    if f.operator_id is None:
        o_reason = "no operator yet"
    else:
        o_reason = (
            f"operator {f.operator_id}: {o_stats.with_findings} of {o_stats.instruments} "
            f"instruments with non-compliance or tamper events (smoothed {100 * share:.1f} %, "
            f"fleet {100 * ctx.finding_rate:.1f} %)"
        )
    since, why = _unverified(f, now)
    until = f.verified_until.isoformat() if f.verified_until else None
    if since is None:
        v_reason = f"verified until {until}" if until else "no verification due"
        v_evidence: dict[str, Any] = {"verified_until": until}
    else:
        days = _days(now, since)
        v_reason = f"{why} ({days:.0f} days)"
        v_evidence = {
            "verified_until": until,
            "since": since.isoformat(),
            "voided_by": f.voided_by,
            "days": round(days, 2),
        }
    status = _cert_status(f, ctx, now.date())
    cert = ctx.certificates.get(f.certificate_id)
    start = f.placed_at or f.registered_at
    years = _years(f, now)
    what = "placed on the market" if f.placed_at else "registered (not placed on the market)"
    return (
        Factor(
            name="alerts",
            weight=w.alerts,
            signal=a_signal,
            reason=a_reason,
            evidence={"alerts": parts},
        ),
        Factor(
            name="type_failures",
            weight=w.type_failures,
            signal=min(1.0, rate / w.failure_saturation),
            reason=(
                f"type {f.certificate_id}: {t_stats.failed} of {t_stats.instruments} "
                f"instruments failed (smoothed rate {100 * rate:.1f} %, fleet "
                f"{100 * ctx.failure_rate:.1f} %)"
            ),
            evidence={
                "certificate_id": f.certificate_id,
                "instruments": t_stats.instruments,
                "failed": t_stats.failed,
                "rate": round(rate, 6),
                "fleet_rate": round(ctx.failure_rate, 6),
            },
        ),
        Factor(
            name="operator_history",
            weight=w.operator_history,
            signal=min(1.0, share / w.history_saturation),
            reason=o_reason,
            evidence={
                "operator_id": f.operator_id,
                "instruments": o_stats.instruments,
                "with_findings": o_stats.with_findings,
                "share": round(share, 6),
                "fleet_share": round(ctx.finding_rate, 6),
            },
        ),
        Factor(
            name="verification",
            weight=w.verification,
            signal=_overdue_signal(since, now, w),
            reason=v_reason,
            evidence=v_evidence,
        ),
        Factor(
            name="certificate",
            weight=w.certificate,
            signal=_cert_signal(status, w),
            reason=f"certificate {f.certificate_id} {status.value}",
            evidence={
                "certificate_id": f.certificate_id,
                "status": status.value,
                "valid_until": cert.valid_until.isoformat() if cert else None,
            },
        ),
        Factor(
            name="age",
            weight=w.age,
            signal=min(1.0, years / w.age_full_years),
            reason=f"{what} {start.date()} ({years:.1f} years)",
            evidence={"since": start.isoformat(), "years": round(years, 3)},
        ),
    )


def assess(
    facts: InstrumentFacts,
    context: FleetContext,
    *,
    now: datetime,
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> InstrumentRisk:
    """The instrument's score and its six factors (in :data:`FACTORS` order)."""
    factors = _explain(facts, context, weights, now)
    return InstrumentRisk(
        facts=facts, score=_total(weights, [f.signal for f in factors]), factors=factors
    )


def assess_type(
    certificate_id: str,
    risks: Sequence[InstrumentRisk],
    context: FleetContext,
    *,
    now: datetime,
    weights: RiskWeights = DEFAULT_WEIGHTS,
    top: int = 10,
) -> TypeRisk:
    """A type's score: the mean of its instruments' scores, so each factor's contribution is
    the mean of theirs. A type without instruments on the market is scored on its type
    factors alone (failure history and certificate)."""
    if not risks:
        blank = InstrumentFacts(
            id="",
            serial="",
            certificate_id=certificate_id,
            category="",
            manufacturer_id="",
            operator_id=None,
            region=None,
            state="",
            registered_at=now,
        )
        alone = assess(blank, context, now=now, weights=weights)
        kept = tuple(
            f if f.name in ("type_failures", "certificate") else _zero(f) for f in alone.factors
        )
        return TypeRisk(
            certificate_id=certificate_id,
            instruments=0,
            score=sum(f.contribution for f in kept),
            factors=kept,
            high_risk=0,
            top=(),
        )
    n = len(risks)
    factors = []
    for i, name in enumerate(FACTORS):
        signals = [r.factors[i].signal for r in risks]
        mean = sum(signals) / n
        first = risks[0].factors[i]
        factors.append(
            Factor(
                name=name,
                weight=first.weight,
                signal=mean,
                reason=f"mean {name} signal over {n} instruments",
                evidence={"raised": sum(1 for s in signals if s > 0)},
            )
        )
    ranked = sorted(risks, key=lambda r: (-r.score, r.instrument_id))
    return TypeRisk(
        certificate_id=certificate_id,
        instruments=n,
        score=sum(r.score for r in risks) / n,
        factors=tuple(factors),
        high_risk=sum(1 for r in risks if r.score >= HIGH_RISK),
        top=tuple(ranked[:top]),
    )


def _zero(f: Factor) -> Factor:
    return Factor(name=f.name, weight=f.weight, signal=0.0, reason="no instrument on the market")
