"""Condition monitoring and predictive maintenance: alerts and the re-verification plan of
the instruments the caller may read (services/fleet.py; DuckDB over the node's lake), the
alerts streaming mode raised as readings arrived (services/streaming.py; no lake scan), and
for the node admin the streaming monitor's queue: what it still owes, what it gave up on,
and putting a poisoned segment back."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, body_doc, guard, json_body
from metrocloud.api.routes.instruments import READERS
from metrocloud.api.schemas import In, Out, Page
from metrocloud.domain.parties import PartyRole
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
    segment: str = Field(
        description="the lake segment whose readings raised it; rebuilt by a replay: "
        "replay:v<manifest version>/<category>/<day>"
    )


KindQ = Annotated[
    Literal["counter_reset", "reverse_flow", "gap", "seal_broken", "tamper_detected"] | None,
    Query(description="only this kind"),
]


class StreamQueuedOut(Out):
    segment: str = Field(description="the lake segment (the flusher's id)")
    state: Literal["pending", "poisoned"] = Field(
        description="pending: owed, tried in commit order; poisoned: given up after its last try"
    )
    position: int = Field(description="commit order")
    committed_at: str = Field(description="when it was queued, at its commit (RFC 3339, UTC)")
    readings: int
    attempts: int = Field(description="failed tries so far")
    next_try_at: str | None = Field(description="a failed segment waits until then")
    error: str | None = Field(description="the last try's error")
    poisoned_at: str | None = Field(description="when it was given up (RFC 3339, UTC)")


class StreamRetryIn(In):
    reason: str = Field(
        default="", max_length=500, description="why it may be tried again (logged)"
    )


StateQ = Annotated[Literal["pending", "poisoned"] | None, Query(description="only this state")]
SegmentP = Annotated[str, Path(min_length=1, max_length=200, description="the segment id")]
ADMIN = PartyRole.NODE_ADMIN


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
    "/monitoring/stream-queue",
    response_model=Page[StreamQueuedOut],
    operation_id="list_stream_queue",
    tags=["monitoring"],
    summary="The streaming monitor's queue: segments owed and poisoned (node admin)",
)
@guard(ADMIN, action="read the streaming queue")
def stream_queue(
    node: NodeDep,
    actor: CurrentActor,
    state: StateQ = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> Page[StreamQueuedOut]:
    page = streaming.list_stream_queue(node, actor, state=state, limit=limit, cursor=cursor)
    return Page[StreamQueuedOut](
        items=[StreamQueuedOut(**streaming.queued_json(q)) for q in page.items],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/monitoring/stream-queue/{segment}/retry",
    response_model=StreamQueuedOut,
    operation_id="retry_stream_segment",
    tags=["monitoring"],
    summary="Put a poisoned segment back in the streaming queue (node admin)",
    openapi_extra=body_doc(StreamRetryIn, required=False),
)
@guard(ADMIN, action="retry a streaming segment")
def retry_stream_segment(
    node: NodeDep,
    actor: CurrentActor,
    segment: SegmentP,
    body: Annotated[StreamRetryIn | None, json_body(StreamRetryIn, required=False)] = None,
) -> StreamQueuedOut:
    row = streaming.retry_stream_segment(node, actor, segment, reason=body.reason if body else None)
    return StreamQueuedOut(**streaming.queued_json(row))


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
