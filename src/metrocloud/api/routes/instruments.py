"""Instruments, their life-cycle events and declarations of conformity."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from metrocloud.api.deps import (
    CurrentActor,
    GuardedRoute,
    NodeDep,
    StatementExtra,
    body_doc,
    guard,
    json_body,
)
from metrocloud.api.schemas import (
    DeclarationIn,
    DeclarationOut,
    EventIn,
    EventOut,
    EventRecorded,
    InstrumentOut,
    InstrumentsIn,
    InstrumentsRegistered,
    Page,
)
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.instruments import LifeCycleState
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import SoftwareIdentification
from metrocloud.services import declarations as decl
from metrocloud.services import events as ev
from metrocloud.services import federation
from metrocloud.services import instruments as svc
from metrocloud.services.common import Actor
from metrocloud.services.node import Node

router = APIRouter(route_class=GuardedRoute)
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200)]
READERS = (PartyRole.MANUFACTURER, PartyRole.OPERATOR, PartyRole.AUTHORITY, PartyRole.NOTIFIED_BODY)


def _event_writer(node: Node, actor: Actor, path: Mapping[str, Any]) -> None:
    ev.check_may_write_events(node, actor, path["instrument_id"])


@router.post(
    "/instruments",
    response_model=InstrumentsRegistered,
    status_code=201,
    operation_id="register_instruments",
    tags=["instruments"],
    summary="Register up to 10,000 instruments in one transaction",
    openapi_extra=body_doc(InstrumentsIn),
)
@guard(PartyRole.MANUFACTURER, action="register instruments")
def register(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[InstrumentsIn, json_body(InstrumentsIn)],
) -> Response:
    drafts = [
        svc.InstrumentDraft(
            serial=i.serial,
            certificate_id=i.certificate_id,
            device_keys=i.device_keys,
            region=i.region,
            software=SoftwareIdentification(**i.software.model_dump()) if i.software else None,
        )
        for i in body.instruments
    ]
    refs, leaf = svc.register_instruments(node, actor, drafts, extra)
    # up to 10,000 refs of plain strings and ints: serialize directly, skip re-validation
    payload = json.dumps({"instruments": refs, "leaf_index": leaf}, separators=(",", ":"))
    return Response(payload, status_code=201, media_type="application/json")


@router.get(
    "/instruments",
    response_model=Page[InstrumentOut],
    operation_id="search_instruments",
    tags=["instruments"],
    summary="Search the instruments you may read",
)
@guard(*READERS, action="search instruments")
def search(
    node: NodeDep,
    actor: CurrentActor,
    limit: Limit = 100,
    cursor: Cursor = None,
    serial: Annotated[str | None, Query(max_length=64)] = None,
    certificate_id: Annotated[str | None, Query(max_length=40)] = None,
    manufacturer_id: Annotated[str | None, Query(max_length=40)] = None,
    operator_id: Annotated[str | None, Query(max_length=40)] = None,
    state: LifeCycleState | None = None,
    region: Annotated[str | None, Query(pattern=r"^[A-Z]{2}[0-9A-Z]{0,3}$")] = None,
    category: InstrumentCategory | None = None,
) -> Page[InstrumentOut]:
    page = svc.search_instruments(
        node,
        actor,
        serial=serial,
        certificate_id=certificate_id,
        manufacturer_id=manufacturer_id,
        operator_id=operator_id,
        state=state,
        region=region,
        category=category.value if category else None,
        limit=limit,
        cursor=cursor,
    )
    return Page[InstrumentOut](
        items=[InstrumentOut(**i) for i in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/instruments/{instrument_id}",
    response_model=InstrumentOut,
    operation_id="get_instrument",
    tags=["instruments"],
    summary="One instrument",
)
@guard(*READERS, action="read instruments")
def get(node: NodeDep, actor: CurrentActor, instrument_id: str) -> InstrumentOut:
    # an instrument of another member state: its home node answers, under its rules
    remote = federation.lookup_instrument(node, actor, instrument_id)
    if remote is not None:
        return InstrumentOut(**remote)
    return InstrumentOut(**svc.get_instrument(node, actor, instrument_id), home_node=node.node_id)


@router.post(
    "/instruments/{instrument_id}/events",
    response_model=EventRecorded,
    status_code=201,
    operation_id="record_event",
    tags=["events"],
    summary="Record a life-cycle event",
    openapi_extra=body_doc(EventIn),
)
@guard(*ev.EVENT_WRITERS, check=_event_writer, action="record life-cycle events")
def record(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    instrument_id: str,
    body: Annotated[EventIn, json_body(EventIn)],
) -> EventRecorded:
    draft = ev.EventDraft(
        instrument_id=instrument_id,
        kind=body.kind,
        occurred_at=body.occurred_at,
        details=body.details,
    )
    return EventRecorded(**ev.record_events(node, actor, [draft], extra)[0])


@router.get(
    "/instruments/{instrument_id}/events",
    response_model=Page[EventOut],
    operation_id="list_events",
    tags=["events"],
    summary="An instrument's events",
)
@guard(*READERS, action="read life-cycle events")
def events(
    node: NodeDep,
    actor: CurrentActor,
    instrument_id: str,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[EventOut]:
    page = ev.list_events(node, actor, instrument_id, limit=limit, cursor=cursor)
    return Page[EventOut](items=[EventOut(**e) for e in page.items], next_cursor=page.next_cursor)


@router.post(
    "/declarations",
    response_model=DeclarationOut,
    status_code=201,
    operation_id="declare_conformity",
    tags=["declarations"],
    summary="Declare conformity of instruments (certificate holder)",
    openapi_extra=body_doc(DeclarationIn),
)
@guard(PartyRole.MANUFACTURER, action="declare conformity")
def declare(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[DeclarationIn, json_body(DeclarationIn)],
) -> DeclarationOut:
    return DeclarationOut(
        **decl.declare_conformity(
            node,
            actor,
            certificate_id=body.certificate_id,
            instrument_ids=body.instrument_ids,
            module=body.module,
            declared_on=body.declared_on,
            document_sha256=body.document_sha256,
            extra=extra,
        )
    )


@router.get(
    "/declarations",
    response_model=Page[DeclarationOut],
    operation_id="list_declarations",
    tags=["declarations"],
    summary="Declarations you may read",
)
@guard(
    PartyRole.MANUFACTURER,
    PartyRole.NOTIFIED_BODY,
    PartyRole.AUTHORITY,
    action="read declarations of conformity",
)
def declarations(
    node: NodeDep,
    actor: CurrentActor,
    limit: Limit = 100,
    cursor: Cursor = None,
    certificate_id: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[DeclarationOut]:
    page = decl.list_declarations(
        node, actor, certificate_id=certificate_id, limit=limit, cursor=cursor
    )
    return Page[DeclarationOut](
        items=[DeclarationOut(**d) for d in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/declarations/{declaration_id}",
    response_model=DeclarationOut,
    operation_id="get_declaration",
    tags=["declarations"],
    summary="One declaration",
)
@guard(
    PartyRole.MANUFACTURER,
    PartyRole.NOTIFIED_BODY,
    PartyRole.AUTHORITY,
    action="read declarations of conformity",
)
def declaration(node: NodeDep, actor: CurrentActor, declaration_id: str) -> DeclarationOut:
    return DeclarationOut(**decl.get_declaration(node, actor, declaration_id))
