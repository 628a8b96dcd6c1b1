"""The risk model of market surveillance: its weights, the facts it reads, what it answers.

Pure: no I/O; the arithmetic is in :mod:`.scoring`. The score of an instrument is the
weighted sum of six factor signals, each in [0, 1], with weights that sum to 1
(:class:`RiskWeights`), so the score lies in [0, 1] and each factor's contribution
(weight x signal) is listed with the evidence behind it:

- ``alerts``: monitoring alerts, ``1 - prod(1 - severity x 0.5^(age / half-life))``: one
  fresh critical alert saturates it, older and milder alerts count less, and no alert can
  lower it;
- ``type_failures``: the failure rate of its type (EU-type examination certificate): the
  share of the type's instruments with a critical alert or a non-compliance, smoothed
  towards the fleet's rate with ``prior_weight`` pseudo-instruments, over ``failure_saturation``;
- ``operator_history``: the same for its operator: the share of the operator's instruments
  with a non-compliance, tamper or broken-seal event, over ``history_saturation``;
- ``verification``: past its verification date, or its verification voided (failed
  verification, broken seal, tamper, repair, software update) and not renewed:
  ``0.5 + 0.5 x min(1, days / overdue_full_days)``;
- ``certificate``: its certificate suspended, withdrawn or expired;
- ``age``: years since it was placed on the market, over ``age_full_years``.

See docs/surveillance.md for the reasoning behind each factor and its default weight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Final

from metrocloud.domain.errors import InvalidInput
from metrocloud.services.monitoring import Alert

__all__ = [
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "HIGH_RISK",
    "CertificateFacts",
    "Factor",
    "FleetContext",
    "InstrumentFacts",
    "InstrumentRisk",
    "OperatorStats",
    "RiskWeights",
    "TypeRisk",
    "TypeStats",
]

FACTORS: Final = (
    "alerts",
    "type_failures",
    "operator_history",
    "verification",
    "certificate",
    "age",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class RiskWeights:
    """Every number of the risk model in one place: the factor weights (they sum to 1) and
    the constants that turn each factor's evidence into a signal in [0, 1]."""

    alerts: float = 0.40
    type_failures: float = 0.15
    operator_history: float = 0.15
    verification: float = 0.12
    certificate: float = 0.10
    age: float = 0.08
    #: an alert's weight halves every this many days
    alert_half_life_days: float = 30.0
    critical: float = 1.0
    warning: float = 0.4
    info: float = 0.1
    #: type failure rate (smoothed) at which the signal saturates
    failure_saturation: float = 0.2
    #: operator's share of instruments with findings at which the signal saturates
    history_saturation: float = 0.2
    #: pseudo-instruments at the fleet's rate added to every type and operator (smoothing)
    prior_weight: float = 10.0
    #: days past the verification date (or since it was voided) to the full signal
    overdue_full_days: float = 365.0
    suspended: float = 0.7
    withdrawn: float = 1.0
    expired: float = 0.3
    #: years on the market to the full age signal
    age_full_years: float = 15.0

    def __post_init__(self) -> None:
        values = asdict(self)
        negative = sorted(k for k, v in values.items() if not (math.isfinite(v) and v >= 0))
        if negative:
            raise InvalidInput(f"risk weights must be finite and >= 0, got {negative}")
        total = sum(getattr(self, f) for f in FACTORS)
        if abs(total - 1.0) > 1e-9:
            raise InvalidInput(
                f"the factor weights must sum to 1 so that a score lies in [0, 1], got {total}"
            )
        for name in ("critical", "warning", "info", "suspended", "withdrawn", "expired"):
            if values[name] > 1:
                raise InvalidInput(f"{name} is a signal in [0, 1], got {values[name]}")
        for name in (
            "alert_half_life_days",
            "failure_saturation",
            "history_saturation",
            "overdue_full_days",
            "age_full_years",
        ):
            if values[name] <= 0:
                raise InvalidInput(f"{name} must be > 0, got {values[name]}")

    def severity(self, severity: str) -> float:
        return {"critical": self.critical, "warning": self.warning, "info": self.info}.get(
            severity, self.info
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_WEIGHTS: Final = RiskWeights()


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateFacts:
    id: str
    status: str
    valid_until: date


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentFacts:
    """What the registry (and monitoring) knows about one instrument."""

    id: str
    serial: str
    certificate_id: str
    category: str
    manufacturer_id: str
    operator_id: str | None
    region: str | None
    state: str
    registered_at: datetime
    placed_at: datetime | None = None
    verified_until: date | None = None
    #: the verification was voided by a later event and not renewed: when, and by which kind
    unverified_since: datetime | None = None
    voided_by: str | None = None
    alerts: tuple[Alert, ...] = ()
    #: non-compliance events (a failure of the instrument)
    non_compliances: int = 0
    #: non-compliance, tamper and broken-seal events (the operator's history)
    findings: int = 0

    @property
    def failed(self) -> bool:
        """A failure for the type's failure rate: a critical alert or a non-compliance."""
        return self.non_compliances > 0 or any(a.severity == "critical" for a in self.alerts)

    @property
    def site(self) -> tuple[str, str]:
        """Who answers for it and where: (operator, or the manufacturer while it has none;
        NUTS region)."""
        return (self.operator_id or self.manufacturer_id, self.region or "")


@dataclass(frozen=True, kw_only=True, slots=True)
class TypeStats:
    instruments: int
    failed: int


@dataclass(frozen=True, kw_only=True, slots=True)
class OperatorStats:
    instruments: int
    with_findings: int


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetContext:
    """The fleet-wide numbers an instrument is compared with (whole node, every state)."""

    types: Mapping[str, TypeStats]
    operators: Mapping[str, OperatorStats]
    certificates: Mapping[str, CertificateFacts]
    #: the fleet's failure rate and share of operated instruments with findings (derived)
    failure_rate: float = field(init=False, default=0.0)
    finding_rate: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        n = sum(t.instruments for t in self.types.values())
        failed = sum(t.failed for t in self.types.values())
        m = sum(o.instruments for o in self.operators.values())
        found = sum(o.with_findings for o in self.operators.values())
        object.__setattr__(self, "failure_rate", failed / n if n else 0.0)
        object.__setattr__(self, "finding_rate", found / m if m else 0.0)

    @classmethod
    def from_facts(
        cls, facts: Iterable[InstrumentFacts], certificates: Iterable[CertificateFacts]
    ) -> FleetContext:
        """The context of a fleet given in full (the registry's queries compute the same)."""
        types: dict[str, list[int]] = {}
        operators: dict[str, list[int]] = {}
        for f in facts:
            t = types.setdefault(f.certificate_id, [0, 0])
            t[0] += 1
            t[1] += int(f.failed)
            if f.operator_id is not None:
                o = operators.setdefault(f.operator_id, [0, 0])
                o[0] += 1
                o[1] += int(f.findings > 0)
        return cls(
            types={k: TypeStats(instruments=v[0], failed=v[1]) for k, v in types.items()},
            operators={
                k: OperatorStats(instruments=v[0], with_findings=v[1]) for k, v in operators.items()
            },
            certificates={c.id: c for c in certificates},
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Factor:
    """One factor of a score: its signal, its contribution (weight x signal) and why."""

    name: str
    weight: float
    signal: float
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contribution(self) -> float:
        return self.weight * self.signal

    def as_dict(self) -> dict[str, Any]:
        return {
            "factor": self.name,
            "weight": self.weight,
            "signal": round(self.signal, 6),
            "contribution": round(self.contribution, 6),
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentRisk:
    facts: InstrumentFacts
    score: float
    factors: tuple[Factor, ...]

    @property
    def instrument_id(self) -> str:
        return self.facts.id

    def reasons(self) -> list[str]:
        """The factors that raise the score, largest contribution first."""
        ranked = sorted(
            (f for f in self.factors if f.contribution > 0), key=lambda f: -f.contribution
        )
        return [f"{f.reason} (+{f.contribution:.3f})" for f in ranked]

    def as_dict(self) -> dict[str, Any]:
        f = self.facts
        return {
            "instrument_id": f.id,
            "serial": f.serial,
            "certificate_id": f.certificate_id,
            "category": f.category,
            "manufacturer_id": f.manufacturer_id,
            "operator_id": f.operator_id,
            "region": f.region,
            "state": f.state,
            "score": round(self.score, 6),
            "reasons": self.reasons(),
            "factors": [x.as_dict() for x in self.factors],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class TypeRisk:
    """A type's risk: the mean of its instruments' scores, factor by factor."""

    certificate_id: str
    instruments: int
    score: float
    factors: tuple[Factor, ...]
    high_risk: int
    top: tuple[InstrumentRisk, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "certificate_id": self.certificate_id,
            "instruments": self.instruments,
            "score": round(self.score, 6),
            "high_risk": self.high_risk,
            "factors": [x.as_dict() for x in self.factors],
            "top": [
                {"instrument_id": r.instrument_id, "score": round(r.score, 6)} for r in self.top
            ],
        }


#: an instrument at or above this score counts as high risk in a type's summary
HIGH_RISK: Final = 0.5
