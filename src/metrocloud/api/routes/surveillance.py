"""e-market surveillance: risk scores, inspection plans, lot decisions, non-compliance notices
(services/surveillance.py, docs/surveillance.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from metrocloud.api.deps import (
    CurrentActor,
    GuardedRoute,
    NodeDep,
    StatementExtra,
    body_doc,
    guard,
    json_body,
)
from metrocloud.api.routes.instruments import READERS
from metrocloud.api.schemas import In, Out, Page
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.instruments import LifeCycleState
from metrocloud.domain.parties import PartyRole
from metrocloud.services import surveillance as svc
from metrocloud.services.monitoring import Alert
from metrocloud.services.node import Node

router = APIRouter(route_class=GuardedRoute)
_ID = r"^[a-z]{3}-[A-Z]{2}-[0-9A-HJKMNP-TV-Z]{26}$"
_NUTS = r"^[A-Z]{2}[0-9A-Z]{0,3}$"
AUTHORITY = (PartyRole.AUTHORITY,)


class FactorOut(Out):
    factor: Literal[
        "alerts", "type_failures", "operator_history", "verification", "certificate", "age"
    ]
    weight: float = Field(description="the factor's weight (the weights sum to 1)")
    signal: float = Field(description="the factor's signal in [0, 1]")
    contribution: float = Field(description="weight x signal: its part of the score")
    reason: str
    evidence: dict[str, Any]


class InstrumentRiskOut(Out):
    instrument_id: str
    serial: str
    certificate_id: str
    category: str
    manufacturer_id: str
    operator_id: str | None
    region: str | None
    state: LifeCycleState
    score: float = Field(description="risk in [0, 1]: the sum of the factors' contributions")
    reasons: list[str] = Field(description="the factors raising it, largest contribution first")
    factors: list[FactorOut]


class ScoreOut(Out):
    instrument_id: str
    score: float


class TypeRiskOut(Out):
    certificate_id: str
    instruments: int = Field(description="its instruments on the market")
    score: float = Field(description="the mean of their scores")
    high_risk: int = Field(description="instruments scoring 0.5 or more")
    factors: list[FactorOut] = Field(description="mean signal and contribution per factor")
    top: list[ScoreOut] = Field(description="its ten riskiest instruments")


class RiskOut(Out):
    sources: list[str] = Field(description="registry, and lake when the lake's alerts were used")
    window_days: int | None = Field(description="the lake alerts' window (days back)")
    alerts: int = Field(description="lake alerts of the whole fleet in the window")
    instrument: InstrumentRiskOut | None = None
    type: TypeRiskOut | None = None


class PlanIn(In):
    budget: int = Field(ge=1, le=10_000, description="inspections the authority can carry out")
    region: str | None = Field(default=None, pattern=_NUTS, description="NUTS prefix")
    category: InstrumentCategory | None = None
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**53 - 1,
        description="seed of the audit draws and tie-breaks; default: drawn by the node",
    )
    audit_share: float = Field(default=0.1, ge=0, le=1)
    operator_cap: float = Field(default=0.5, gt=0, le=1)
    site_cap: float = Field(default=0.25, gt=0, le=1)
    lake: bool = Field(default=True, description="use the lake's monitoring alerts too")
    days: int = Field(default=90, ge=1, le=3650, description="window of the lake alerts")


class PlanItemOut(InstrumentRiskOut):
    rank: int
    selection: Literal["risk", "audit"]
    note: str


class PlanOut(Out):
    format: str
    authority: str
    created_at: str
    budget: int
    filters: dict[str, str | None]
    rule: dict[str, float]
    weights: dict[str, float]
    sources: list[str]
    seed: int = Field(description="keep it: with it the plan can be recomputed and proven")
    candidates: int = Field(description="instruments on the market matching the filters")
    size: int
    digest: str = Field(description="SHA-256 of the plan document, committed to the ledger")
    leaf_index: int
    items: list[PlanItemOut]


class ResultIn(In):
    instrument_id: str = Field(pattern=_ID)
    conforming: bool
    finding: str = Field(default="", max_length=2000)


class LotIn(In):
    reference: str = Field(min_length=1, max_length=200, examples=["LOT-2026-0117"])
    scheme: Literal["mid-f", "iso2859"] = "mid-f"
    lot_size: int = Field(ge=1, le=10_000_000)
    aql: str | None = Field(default=None, max_length=8, examples=["2.5"])
    results: list[ResultIn] = Field(min_length=1, max_length=10_000)


class LotDecisionOut(Out):
    decision: Literal["accept", "reject"]
    reference: str
    certificate_id: str
    scheme: str
    lot_size: int | None
    n: int
    c: int
    re: int
    aql: str | None
    inspected: int
    defects: int
    nonconforming: list[str]
    rule: str
    consequence: str
    decided_by: str
    leaf_index: int


class NoticeIn(In):
    instrument_ids: list[str] = Field(min_length=1, max_length=10_000)
    finding: str = Field(min_length=1, max_length=4000)
    legal_basis: str = Field(
        min_length=1, max_length=500, examples=["MID 2014/32/EU Art. 40, Annex I point 8"]
    )
    measures: list[str] = Field(min_length=1, max_length=50)
    deadline: date
    reference: str | None = Field(default=None, max_length=200)
    occurred_at: datetime | None = None


class NoticeBody(Out):
    finding: str
    legal_basis: str
    measures: list[str]
    deadline: str
    reference: str | None = None


class NoticeRecorded(Out):
    id: str
    instrument_id: str
    kind: str
    occurred_at: str
    state_after: LifeCycleState
    leaf_index: int
    notice: NoticeBody


class NoticesRecorded(Out):
    notices: list[NoticeRecorded]


class NoticeOut(Out):
    id: str = Field(description="the non_compliance_found event")
    instrument_id: str
    serial: str
    manufacturer_id: str
    operator_id: str | None
    occurred_at: str
    recorded_by: str
    notice: NoticeBody | None = Field(description="null for an event recorded without a notice")
    details: dict[str, Any]
    open: bool = Field(description="no corrective_action after it yet")
    closed_by: str | None = Field(description="the first corrective_action after it")
    leaf_index: int


def _alerts(node: Node, lake: bool, days: int) -> tuple[list[Alert], list[str], int | None]:
    if not lake:
        return [], ["registry"], None
    return svc.lake_alerts(node, days=days), ["registry", "lake"], days


@router.get(
    "/surveillance/risk",
    response_model=RiskOut,
    operation_id="get_risk",
    tags=["surveillance"],
    summary="Risk score of an instrument or a type, every factor explained (authority)",
)
@guard(*AUTHORITY, action="read risk scores")
def risk(
    node: NodeDep,
    actor: CurrentActor,
    instrument: Annotated[str | None, Query(max_length=40)] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=40)] = None,
    lake: bool = True,
    days: Annotated[int, Query(ge=1, le=3650)] = 90,
) -> RiskOut:
    if (instrument is None) == (type_ is None):
        raise InvalidInput("give exactly one of instrument=<ins-...> and type=<cer-...>")
    alerts, sources, window = _alerts(node, lake, days)
    found: dict[str, Any] = {}
    if instrument is not None:
        r = svc.instrument_risk(node, actor, instrument, alerts=alerts)
        found["instrument"] = InstrumentRiskOut(**r.as_dict())
    else:
        t = svc.type_risk(node, actor, str(type_), alerts=alerts)
        found["type"] = TypeRiskOut(**t.as_dict())
    return RiskOut(sources=sources, window_days=window, alerts=len(alerts), **found)


@router.post(
    "/surveillance/inspection-plans",
    response_model=PlanOut,
    status_code=201,
    operation_id="plan_inspections",
    tags=["surveillance"],
    summary="Plan K inspections: ranked by risk, spread over operators, a random audit share",
    openapi_extra=body_doc(PlanIn),
)
@guard(*AUTHORITY, action="plan inspections")
def plan(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[PlanIn, json_body(PlanIn)],
) -> PlanOut:
    rule = svc.PlanRule(
        audit_share=body.audit_share, operator_cap=body.operator_cap, site_cap=body.site_cap
    )
    alerts, sources, _ = _alerts(node, body.lake, body.days)
    p = svc.inspection_plan(
        node,
        actor,
        budget=body.budget,
        region=body.region,
        category=body.category.value if body.category else None,
        seed=body.seed,
        rule=rule,
        alerts=alerts,
        sources=sources,
        extra=extra,
    )
    return PlanOut(**p.as_dict())


@router.post(
    "/surveillance/lot-decisions",
    response_model=LotDecisionOut,
    status_code=201,
    operation_id="decide_lot",
    tags=["surveillance"],
    summary="Accept or reject a lot from its inspected sample (MID module F, ISO 2859-1)",
    openapi_extra=body_doc(LotIn),
)
@guard(PartyRole.AUTHORITY, PartyRole.NOTIFIED_BODY, action="decide on lots")
def decide(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[LotIn, json_body(LotIn)],
) -> LotDecisionOut:
    sampling = svc.sampling_plan(body.scheme, body.lot_size, body.aql)
    results = [
        svc.InspectionResult(
            instrument_id=r.instrument_id, conforming=r.conforming, finding=r.finding
        )
        for r in body.results
    ]
    return LotDecisionOut(
        **svc.record_lot_decision(
            node, actor, reference=body.reference, plan=sampling, results=results, extra=extra
        )
    )


@router.post(
    "/surveillance/non-compliance",
    response_model=NoticesRecorded,
    status_code=201,
    operation_id="notify_non_compliance",
    tags=["surveillance"],
    summary="Record a non-compliance notice on instruments (authority)",
    openapi_extra=body_doc(NoticeIn),
)
@guard(*AUTHORITY, action="record non-compliance notices")
def notify(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[NoticeIn, json_body(NoticeIn)],
) -> NoticesRecorded:
    recorded = svc.notify_non_compliance(
        node,
        actor,
        body.instrument_ids,
        finding=body.finding,
        measures=body.measures,
        legal_basis=body.legal_basis,
        deadline=body.deadline,
        reference=body.reference,
        occurred_at=body.occurred_at,
        extra=extra,
    )
    return NoticesRecorded(notices=[NoticeRecorded(**r) for r in recorded])


@router.get(
    "/surveillance/non-compliance",
    response_model=Page[NoticeOut],
    operation_id="list_non_compliance",
    tags=["surveillance"],
    summary="Non-compliance notices on the instruments you may read; open: no corrective action",
)
@guard(*READERS, action="read non-compliance notices")
def notices(
    node: NodeDep,
    actor: CurrentActor,
    open_: Annotated[bool | None, Query(alias="open")] = None,
    instrument: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[NoticeOut]:
    page = svc.list_non_compliance(
        node, actor, open_=open_, instrument_id=instrument, limit=limit, cursor=cursor
    )
    return Page[NoticeOut](items=[NoticeOut(**n) for n in page.items], next_cursor=page.next_cursor)
