"""Condition monitoring and predictive maintenance: alerts and the re-verification plan of
the instruments the caller may read (services/fleet.py; DuckDB over the node's lake), and
the alerts streaming mode raised as readings arrived (services/streaming.py; no lake scan)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.api.routes.instruments import READERS
from metrocloud.api.schemas import Out, Page
from metrocloud.services import fleet as svc
from metrocloud.services import streaming

router = APIRouter(route_class=GuardedRoute)

From = Annotated[
    datetime | None,
    Query(alias="from", description="window start, inclusive (RFC 3339; no zone: UTC)"),
]
To = Annotated[
    datetime | None, Query(alias="to", description="window end, exclusive (RFC 3339; no zone: UTC)")
]
InstrumentQ = Annotated[
    str | None, Query(max_length=64, description="only this instrument (it must be readable)")
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200)]


class AlertOut(Out):
    instrument: str
    kind: str = Field(description="one of docs/monitoring.md#alerts: drift, counter_reset, ...")
    severity: Literal["info", "warning", "critical"]
    at: str = Field(description="first evidence (RFC 3339, UTC)")
    evidence: dict[str, Any] = Field(description="the numbers that justify the alert")


class StreamAlertOut(Out):
    instrument: str
    kind: str = Field(description="counter_reset, reverse_flow, gap, seal_broken, tamper_detected")
    severity: Literal["info", "warning", "critical"]
    at: str = Field(description="first evidence (RFC 3339, UTC)")
    last_at: str = Field(description="newest evidence (RFC 3339, UTC)")
    count: int = Field(description="anomalies of this kind seen so far")
    evidence: dict[str, Any] = Field(description="the numbers that justify the alert")
    raised_at: str = Field(description="when the node raised it (RFC 3339, UTC)")
    updated_at: str = Field(description="when a repeat last added to it (RFC 3339, UTC)")
    segment: str = Field(description="the lake segment whose readings raised it")


KindQ = Annotated[
    Literal["counter_reset", "reverse_flow", "gap", "seal_broken", "tamper_detected"] | None,
    Query(description="only this kind"),
]


class DriftEstimateOut(Out):
    instrument: str
    drift_percent_per_year: float | None = Field(description="Theil-Sen slope of the error")
    drift_low: float | None = Field(description="lower bound of Sen's 95 % interval")
    drift_high: float | None = Field(description="upper bound of Sen's 95 % interval")
    error_percent: float | None = Field(description="fitted error at the last daily error")
    mpe_percent: float = Field(description="the in-service maximum permissible error")
    days: int = Field(description="daily errors against the reference meter")
    predicted_crossing: str | None = Field(description="when the line crosses the MPE (UTC)")
    crossing_earliest: str | None = Field(description="the earliest crossing the interval allows")
    recommended_reverification: date | None = Field(
        description="crossing less 30 days, or the end of the verification period if earlier"
    )


@router.get(
    "/monitoring/alerts",
    response_model=Page[AlertOut],
    operation_id="list_alerts",
    tags=["monitoring"],
    summary="Condition-monitoring alerts of the instruments the caller may read",
)
@guard(*READERS, action="read monitoring alerts")
def alerts(
    node: NodeDep,
    actor: CurrentActor,
    start: From = None,
    end: To = None,
    instrument: InstrumentQ = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Page[AlertOut]:
    page = svc.party_alerts(
        node, actor, start=start, end=end, instrument=instrument, limit=limit, cursor=cursor
    )
    return Page[AlertOut](
        items=[AlertOut(**svc.alert_json(a)) for a in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/monitoring/stream-alerts",
    response_model=Page[StreamAlertOut],
    operation_id="list_stream_alerts",
    tags=["monitoring"],
    summary="Alerts raised as readings arrived, of the instruments the caller may read",
)
@guard(*READERS, action="read monitoring alerts")
def stream_alerts(
    node: NodeDep,
    actor: CurrentActor,
    instrument: InstrumentQ = None,
    kind: KindQ = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Page[StreamAlertOut]:
    page = streaming.party_stream_alerts(
        node, actor, instrument=instrument, kind=kind, limit=limit, cursor=cursor
    )
    return Page[StreamAlertOut](
        items=[StreamAlertOut(**streaming.stream_alert_json(a)) for a in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/maintenance/plan",
    response_model=Page[DriftEstimateOut],
    operation_id="maintenance_plan",
    tags=["monitoring"],
    summary="Drift, predicted MPE crossing and re-verification date per readable instrument",
)
@guard(*READERS, action="read the maintenance plan")
def plan(
    node: NodeDep,
    actor: CurrentActor,
    start: From = None,
    end: To = None,
    instrument: InstrumentQ = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Page[DriftEstimateOut]:
    page = svc.party_plan(
        node, actor, start=start, end=end, instrument=instrument, limit=limit, cursor=cursor
    )
    return Page[DriftEstimateOut](
        items=[DriftEstimateOut(**svc.estimate_json(e)) for e in page.items],
        next_cursor=page.next_cursor,
    )
