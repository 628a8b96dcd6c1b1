"""Forensic support: an instrument's timeline and its evidence bundle (docs/forensics.md).

Read by an authority, the instrument's manufacturer (its owner) and its operator; reads by
others than the owner and operator land in their access log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import Field

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.api.schemas import Out
from metrocloud.domain.parties import PartyRole
from metrocloud.services import forensics as svc

router = APIRouter(route_class=GuardedRoute)
FORENSIC_READERS = (PartyRole.MANUFACTURER, PartyRole.OPERATOR, PartyRole.AUTHORITY)
BUNDLE_MEDIA_TYPE = "application/zip"

From = Annotated[
    datetime | None,
    Query(alias="from", description="window start, inclusive (RFC 3339; no zone: UTC)"),
]
To = Annotated[
    datetime | None, Query(alias="to", description="window end, exclusive (RFC 3339; no zone: UTC)")
]


class WindowOut(Out):
    start: str | None
    end: str | None


class TimelineEntryOut(Out):
    at: str = Field(description="when (RFC 3339, UTC, milliseconds)")
    type: Literal[
        "registered",
        "certificate",
        "declaration",
        "event",
        "verification",
        "flag",
        "quarantine",
        "measurements",
        "access",
    ]
    leaf_index: int | None = Field(description="the signed statement in the node's log, if any")
    ref: str | None = Field(description="the record: event, declaration, certificate, flag id")
    details: dict[str, Any]


class TimelineOut(Out):
    instrument: dict[str, Any]
    window: WindowOut
    entries: list[TimelineEntryOut]


@router.get(
    "/instruments/{instrument_id}/timeline",
    response_model=TimelineOut,
    operation_id="get_timeline",
    tags=["forensics"],
    summary="An instrument's forensic timeline, in time order",
)
@guard(*FORENSIC_READERS, action="read an instrument's forensic record")
def get_timeline(
    node: NodeDep,
    actor: CurrentActor,
    instrument_id: str,
    start: From = None,
    end: To = None,
) -> TimelineOut:
    story = svc.timeline(node, actor, instrument_id, start=start, end=end)
    return TimelineOut.model_validate(story.to_json())


@router.get(
    "/instruments/{instrument_id}/evidence",
    operation_id="get_evidence_bundle",
    tags=["forensics"],
    summary="An instrument's evidence bundle (checked offline by metrocloud evidence verify)",
    response_class=Response,
    responses={
        200: {
            "content": {BUNDLE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "the bundle file (docs/forensics.md)",
        }
    },
)
@guard(*FORENSIC_READERS, action="export an instrument's evidence bundle")
def get_evidence(
    node: NodeDep,
    actor: CurrentActor,
    instrument_id: str,
    start: From = None,
    end: To = None,
) -> Response:
    bundle = svc.export_bundle(node, actor, instrument_id, start=start, end=end)
    return Response(
        content=bundle.data,
        media_type=BUNDLE_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{bundle.instrument_id}.zip"',
            "Metrocloud-Bundle-SHA256": bundle.sha256,
        },
    )
