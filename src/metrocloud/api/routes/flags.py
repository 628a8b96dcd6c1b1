"""What the measurement intake found about an instrument: counter gaps, unapproved software."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.api.routes.instruments import READERS
from metrocloud.api.schemas import Out, Page
from metrocloud.services import flags as svc

router = APIRouter(route_class=GuardedRoute)


class FlagOut(Out):
    id: int
    instrument_id: str
    kind: str = Field(
        description="counter-gap (batches were lost on the way; the batch was accepted) or "
        "unapproved-software (the batch reported software its certificate does not approve; "
        "it was quarantined)"
    )
    detail: str = Field(description="the evidence: counters, checksum, certificate")
    at: str = Field(description="when the intake received the batch (RFC 3339, UTC)")


@router.get(
    "/instruments/{instrument_id}/flags",
    response_model=Page[FlagOut],
    operation_id="list_flags",
    tags=["measurements"],
    summary="What the measurement intake flagged on an instrument",
)
@guard(*READERS, action="read instrument flags")
def flags(
    node: NodeDep,
    actor: CurrentActor,
    instrument_id: str,
    kind: Literal["counter-gap", "unapproved-software"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[FlagOut]:
    page = svc.list_flags(node, actor, instrument_id, kind=kind, limit=limit, cursor=cursor)
    return Page[FlagOut](items=[FlagOut(**f) for f in page.items], next_cursor=page.next_cursor)
