"""An instrument's signed measurements (the lake), linked from its AAS TimeSeries submodel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.api.schemas import Page
from metrocloud.domain.parties import PartyRole
from metrocloud.services import readings as svc

router = APIRouter(route_class=GuardedRoute)
READERS = (PartyRole.MANUFACTURER, PartyRole.OPERATOR, PartyRole.AUTHORITY, PartyRole.NOTIFIED_BODY)


class Reading(BaseModel):
    t: str = Field(description="time of the reading, UTC (ISO 8601, milliseconds)")
    quantity: str = Field(description="quantity code, e.g. the OBIS code 1-0:1.8.0")
    value: float
    unit: str | None
    status: int | None = Field(description="the device's status bits for the reading")
    batch_counter: int | None = Field(description="the signed batch that carried it")


@router.get(
    "/instruments/{instrument_id}/measurements",
    response_model=Page[Reading],
    operation_id="list_measurements",
    tags=["measurements"],
    summary="An instrument's signed readings from the lake, by quantity then time",
)
@guard(*READERS, action="read measurements")
def measurements(
    node: NodeDep,
    actor: CurrentActor,
    instrument_id: str,
    quantity: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[datetime | None, Query(description="from this time (inclusive)")] = None,
    end: Annotated[datetime | None, Query(description="to this time (exclusive)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[Reading]:
    page = svc.instrument_measurements(
        node,
        actor,
        instrument_id,
        quantity=quantity,
        start=start,
        end=end,
        limit=limit,
        cursor=cursor,
    )
    return Page[Reading](items=[Reading(**r) for r in page.items], next_cursor=page.next_cursor)
