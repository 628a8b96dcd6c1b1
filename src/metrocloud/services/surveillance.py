"""e-market surveillance: risk scores, inspection plans, lot decisions, non-compliance notices.

For market surveillance and verification authorities (docs/surveillance.md):

- :func:`instrument_risk`, :func:`type_risk`, :func:`risk_scores`: an explainable risk score
  in [0, 1] per instrument (six weighted factors, each contribution with its evidence:
  :mod:`._surveillance.model`, :mod:`._surveillance.scoring`) and per type (the mean of its
  instruments), computed from the registry in set-based queries
  (:mod:`._surveillance.facts`) plus, when given, the monitoring alerts from the lake
  (:func:`lake_alerts`);
- :func:`inspection_plan`: the K instruments to inspect for a budget of K, ranked with their
  reasons, spread over operators and sites, with a seeded random audit share
  (:mod:`._surveillance.plan`); the plan's digest is committed to the ledger
  (``inspection.planned``), the plan itself stays with the authority;
- :func:`lot_decision` and :func:`record_lot_decision`: accept or reject a lot from its
  sampling plan (MID module F, ISO 2859-1) and the inspected sample (``lot.decided``);
- :func:`notify_non_compliance` and :func:`list_non_compliance`: notices as
  ``non_compliance_found`` life-cycle events, open until a corrective action.

Risk scores are surveillance intelligence: only authorities read them. Reading them is
logged: a single instrument's risk in its owners' access log (``risk.read``); a scan of a
fleet or a type once per owner party whose instruments were scored (``risk.scored``, the
resource is the party), so that an operator learns that its fleet was scored, not which of
its instruments a plan picked.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, select

from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services._surveillance.facts import (
    candidates,
    load_context,
    load_facts,
    merge_alerts,
)
from metrocloud.services._surveillance.lots import (
    LOT_KIND,
    InspectionResult,
    LotDecision,
    lot_decision,
    record_lot_decision,
    sampling_plan,
)
from metrocloud.services._surveillance.model import (
    DEFAULT_WEIGHTS,
    FACTORS,
    Factor,
    FleetContext,
    InstrumentFacts,
    InstrumentRisk,
    RiskWeights,
    TypeRisk,
)
from metrocloud.services._surveillance.notices import (
    NOTICE_RULE,
    list_non_compliance,
    notify_non_compliance,
)
from metrocloud.services._surveillance.plan import (
    DEFAULT_RULE,
    MAX_SEED,
    PLAN_FORMAT,
    PlanItem,
    PlanRule,
    choose,
    plan_digest,
)
from metrocloud.services._surveillance.scoring import assess, assess_type, scores
from metrocloud.services.common import Actor, log_reads, require_role
from metrocloud.services.fleet import node_engine
from metrocloud.services.instruments import instrument_row
from metrocloud.services.monitoring import Alert, detect
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, instruments

__all__ = [
    "DEFAULT_RULE",
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "LOT_KIND",
    "NOTICE_RULE",
    "PLAN_KIND",
    "Factor",
    "FleetContext",
    "InspectionPlan",
    "InspectionResult",
    "InstrumentFacts",
    "InstrumentRisk",
    "LotDecision",
    "PlanItem",
    "PlanRule",
    "RiskWeights",
    "TypeRisk",
    "inspection_plan",
    "instrument_risk",
    "lake_alerts",
    "list_non_compliance",
    "lot_decision",
    "notify_non_compliance",
    "plan_digest",
    "record_lot_decision",
    "risk_scores",
    "sampling_plan",
    "type_risk",
]

PLAN_KIND: Final = "inspection.planned"
_SURVEILLANCE = "read risk scores and plan inspections"


def lake_alerts(node: Node, *, days: int = 90, engine: str = "duckdb") -> list[Alert]:
    """Every monitoring alert of the last ``days`` days: :func:`monitoring.detect` over the
    node's lake (``engine`` duckdb or spark, :func:`metrocloud.services.fleet.node_engine`);
    only the registry's findings while no reading has reached the lake."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise InvalidInput(f"the alert window is 1 to 3650 days, got {days!r}")
    with node_engine(node, engine) as eng:
        return detect(node, eng, start=node.now() - timedelta(days=days))


def _owners(facts: Iterable[InstrumentFacts]) -> list[str]:
    out: dict[str, None] = {}
    for f in facts:
        out[f.manufacturer_id] = None
        if f.operator_id:
            out[f.operator_id] = None
    return sorted(out)


def _log_scan(conn: Connection, node: Node, actor: Actor, facts: Sequence[InstrumentFacts]) -> None:
    log_reads(
        conn, actor, node.timestamp(), "risk.scored", "party", [(p, (p,)) for p in _owners(facts)]
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Scan:
    """Facts of the candidates, the fleet context, and each candidate's bare score."""

    context: FleetContext
    now: datetime
    weights: RiskWeights
    ranked: list[InstrumentRisk]  # highest score first; factors not explained yet

    def explain(self, risk: InstrumentRisk) -> InstrumentRisk:
        return assess(risk.facts, self.context, now=self.now, weights=self.weights)


def _scan(node: Node, where: Any, alerts: Sequence[Alert], weights: RiskWeights) -> _Scan:
    """Score every instrument matching ``where``: the facts in set-based queries, then the
    bare scores (:func:`scores`); only what is returned gets explained (:func:`assess`)."""
    now = node.now()
    with node.db.read() as conn:
        context = load_context(conn, lake_alerts=alerts)
        facts = load_facts(conn, where, lake_alerts=merge_alerts(alerts))
    bare = [
        InstrumentRisk(facts=f, score=x, factors=())
        for f, x in zip(facts, scores(facts, context, now=now, weights=weights), strict=True)
    ]
    bare.sort(key=lambda r: (-r.score, r.instrument_id))
    return _Scan(context=context, now=now, weights=weights, ranked=bare)


def risk_scores(
    node: Node,
    actor: Actor,
    *,
    region: str | None = None,
    category: str | None = None,
    alerts: Sequence[Alert] = (),
    weights: RiskWeights = DEFAULT_WEIGHTS,
    limit: int | None = None,
) -> list[InstrumentRisk]:
    """The risk of every instrument on the market (optionally of a NUTS region prefix and a
    category), highest first, every factor explained; ``limit``: only the riskiest."""
    require_role(actor, PartyRole.AUTHORITY, action=_SURVEILLANCE)
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit must be >= 1, got {limit}")
    scan = _scan(node, candidates(region=region, category=category), alerts, weights)
    with node.db.write() as conn:
        _log_scan(conn, node, actor, [r.facts for r in scan.ranked])
    return [scan.explain(r) for r in scan.ranked[:limit]]


def instrument_risk(
    node: Node,
    actor: Actor,
    instrument_id: str,
    *,
    alerts: Sequence[Alert] = (),
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> InstrumentRisk:
    """One instrument's risk (whatever its state), with every factor's evidence."""
    require_role(actor, PartyRole.AUTHORITY, action=_SURVEILLANCE)
    with node.db.read() as conn:
        instrument_row(conn, instrument_id)  # NotFound
    scan = _scan(node, instruments.c.id == instrument_id, alerts, weights)
    risk = scan.explain(scan.ranked[0])
    with node.db.write() as conn:
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "risk.read",
            "instrument",
            [(risk.instrument_id, (risk.facts.manufacturer_id, risk.facts.operator_id))],
        )
    return risk


def type_risk(
    node: Node,
    actor: Actor,
    certificate_id: str,
    *,
    alerts: Sequence[Alert] = (),
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> TypeRisk:
    """A type's risk: the mean over its instruments on the market, factor by factor."""
    require_role(actor, PartyRole.AUTHORITY, action=_SURVEILLANCE)
    with node.db.read() as conn:
        found = conn.execute(
            select(certificates.c.id).where(certificates.c.id == certificate_id)
        ).first()
    if found is None:
        raise NotFound(f"certificate {certificate_id} does not exist")
    where = candidates() & (instruments.c.certificate_id == certificate_id)
    scan = _scan(node, where, alerts, weights)
    with node.db.write() as conn:
        _log_scan(conn, node, actor, [r.facts for r in scan.ranked])
    risks = [scan.explain(r) for r in scan.ranked]
    return assess_type(certificate_id, risks, scan.context, now=scan.now, weights=weights)


@dataclass(frozen=True, kw_only=True, slots=True)
class InspectionPlan:
    """An authority's plan: what it committed to (:meth:`document`) and where."""

    authority: str
    created_at: str
    budget: int
    region: str | None
    category: str | None
    seed: int
    rule: PlanRule
    weights: RiskWeights
    sources: tuple[str, ...]
    candidates: int
    items: tuple[PlanItem, ...]
    digest: str = ""
    leaf_index: int | None = None

    def document(self) -> dict[str, Any]:
        """The committed plan: its SHA-256 (RFC 8785 canonical JSON) is in the ledger."""
        return {
            "format": PLAN_FORMAT,
            "authority": self.authority,
            "created_at": self.created_at,
            "budget": self.budget,
            "filters": {"region": self.region, "category": self.category},
            "rule": self.rule.as_dict(),
            "weights": self.weights.as_dict(),
            "sources": list(self.sources),
            "seed": self.seed,
            "candidates": self.candidates,
            "items": [
                {
                    "rank": i.rank,
                    "instrument_id": i.risk.instrument_id,
                    "selection": i.selection,
                    "score": round(i.risk.score, 6),
                }
                for i in self.items
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.document().items() if k != "items"},
            "size": len(self.items),
            "digest": self.digest,
            "leaf_index": self.leaf_index,
            "items": [i.as_dict() for i in self.items],
        }


def inspection_plan(
    node: Node,
    actor: Actor,
    *,
    budget: int,
    region: str | None = None,
    category: str | None = None,
    seed: int | None = None,
    rule: PlanRule = DEFAULT_RULE,
    alerts: Sequence[Alert] = (),
    sources: Sequence[str] = ("registry",),
    weights: RiskWeights = DEFAULT_WEIGHTS,
    extra: dict[str, Any] | None = None,
) -> InspectionPlan:
    """Plan ``budget`` inspections among the instruments on the market (see
    :mod:`._surveillance.plan` for the rule) and commit the plan's digest to the ledger."""
    require_role(actor, PartyRole.AUTHORITY, action="plan inspections")
    most = node.settings.max_batch
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= most:
        raise InvalidInput(f"the budget is 1 to {most} inspections, got {budget!r}")
    if seed is None:
        seed = secrets.randbits(53)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"the seed is an integer from 0 to 2^53 - 1, got {seed!r}")
    scan = _scan(node, candidates(region=region, category=category), alerts, weights)
    items = tuple(
        replace(i, risk=scan.explain(i.risk))
        for i in choose(scan.ranked, budget=budget, seed=seed, rule=rule)
    )
    plan = InspectionPlan(
        authority=actor.party_id,
        created_at=node.timestamp(),
        budget=budget,
        region=region,
        category=category,
        seed=seed,
        rule=rule,
        weights=weights,
        sources=tuple(sources),
        candidates=len(scan.ranked),
        items=items,
    )
    digest = plan_digest(plan.document())
    body = {"plan": {"digest": digest, "size": len(items), "format": PLAN_FORMAT}}
    with node.db.write() as conn:
        _log_scan(conn, node, actor, [r.facts for r in scan.ranked])
        rec = node.commit(
            conn, [node.statement(kind=PLAN_KIND, signer=actor.party_id, body=body, extra=extra)]
        )
    return replace(plan, digest=digest, leaf_index=rec.leaf_indexes[0])
