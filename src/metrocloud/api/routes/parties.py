"""Parties, credentials, grants and the access log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, body_doc, guard, json_body
from metrocloud.api.schemas import (
    AccessLogOut,
    GrantIn,
    GrantOut,
    MeOut,
    Page,
    PartyCreated,
    PartyIn,
    PartyOut,
    TokenIn,
    TokenInfo,
    TokenOut,
)
from metrocloud.domain.parties import PartyRole
from metrocloud.services import access
from metrocloud.services import parties as svc

router = APIRouter(route_class=GuardedRoute)
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=200, description="From `next_cursor`.")]
ADMIN = PartyRole.NODE_ADMIN


@router.get(
    "/me",
    response_model=MeOut,
    operation_id="get_me",
    tags=["auth"],
    summary="The party behind the presented token",
)
@guard()
def me(actor: CurrentActor) -> MeOut:
    return MeOut(
        party_id=actor.party_id, role=actor.role, country=actor.country, token_id=actor.token_id
    )


@router.post(
    "/parties",
    response_model=PartyCreated,
    status_code=201,
    operation_id="admit_party",
    tags=["parties"],
    summary="Admit a party (node admin)",
    openapi_extra=body_doc(PartyIn),
)
@guard(ADMIN, action="admit parties")
def admit(
    node: NodeDep, actor: CurrentActor, body: Annotated[PartyIn, json_body(PartyIn)]
) -> PartyCreated:
    party, _ = svc.admit_party(
        node,
        actor,
        name=body.name,
        role=body.role,
        country=body.country,
        nb_number=body.nb_number,
        public_key=body.public_key,
    )
    return PartyCreated(**party)


@router.get(
    "/parties",
    response_model=Page[PartyOut],
    operation_id="list_parties",
    tags=["parties"],
    summary="The directory of admitted parties",
)
@guard()
def list_parties(
    node: NodeDep,
    actor: CurrentActor,
    limit: Limit = 100,
    cursor: Cursor = None,
    role: PartyRole | None = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
) -> Page[PartyOut]:
    page = svc.list_parties(node, role=role, country=country, limit=limit, cursor=cursor)
    return Page[PartyOut](items=[PartyOut(**p) for p in page.items], next_cursor=page.next_cursor)


@router.get(
    "/parties/{party_id}",
    response_model=PartyOut,
    operation_id="get_party",
    tags=["parties"],
    summary="One party",
)
@guard()
def get_party(node: NodeDep, actor: CurrentActor, party_id: str) -> PartyOut:
    return PartyOut(**svc.get_party(node, party_id))


@router.post(
    "/parties/{party_id}/tokens",
    response_model=TokenOut,
    status_code=201,
    operation_id="issue_token",
    tags=["auth"],
    summary="Issue a bearer token for a party (node admin)",
    openapi_extra=body_doc(TokenIn, required=False),
)
@guard(ADMIN, action="issue tokens for parties")
def issue_token(
    node: NodeDep,
    actor: CurrentActor,
    party_id: str,
    body: Annotated[TokenIn | None, json_body(TokenIn, required=False)] = None,
) -> TokenOut:
    cred = svc.issue_credential(node, actor, party_id, body.label if body else "")
    return TokenOut(
        token_id=cred.token_id, party_id=cred.party_id, token=cred.token, expires_at=cred.expires_at
    )


@router.get(
    "/auth/tokens",
    response_model=Page[TokenInfo],
    operation_id="list_tokens",
    tags=["auth"],
    summary="Your tokens (the node admin sees all)",
)
@guard()
def list_tokens(
    node: NodeDep, actor: CurrentActor, limit: Limit = 100, cursor: Cursor = None
) -> Page[TokenInfo]:
    page = svc.list_tokens(node, actor, limit=limit, cursor=cursor)
    return Page[TokenInfo](items=[TokenInfo(**t) for t in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/auth/tokens/{token_id}",
    response_model=TokenInfo,
    operation_id="revoke_token",
    tags=["auth"],
    summary="Revoke a token",
)
@guard()
def revoke_token(node: NodeDep, actor: CurrentActor, token_id: str) -> TokenInfo:
    return TokenInfo(**svc.revoke_token(node, actor, token_id))


@router.get(
    "/access-log",
    response_model=Page[AccessLogOut],
    operation_id="list_access_log",
    tags=["access"],
    summary="Who read your records, newest first",
)
@guard()
def access_log(
    node: NodeDep, actor: CurrentActor, limit: Limit = 100, cursor: Cursor = None
) -> Page[AccessLogOut]:
    page = access.list_access_log(node, actor, limit=limit, cursor=cursor)
    return Page[AccessLogOut](
        items=[AccessLogOut(**e) for e in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/grants",
    response_model=GrantOut,
    status_code=201,
    operation_id="create_grant",
    tags=["access"],
    summary="Let another party read your instruments",
    openapi_extra=body_doc(GrantIn),
)
@guard(PartyRole.MANUFACTURER, PartyRole.OPERATOR, action="grant read access")
def create_grant(
    node: NodeDep, actor: CurrentActor, body: Annotated[GrantIn, json_body(GrantIn)]
) -> GrantOut:
    return GrantOut(
        **access.create_grant(
            node, actor, grantee_id=body.grantee_id, instrument_id=body.instrument_id
        )
    )


@router.get(
    "/grants",
    response_model=Page[GrantOut],
    operation_id="list_grants",
    tags=["access"],
    summary="Grants you gave or received",
)
@guard()
def list_grants(
    node: NodeDep, actor: CurrentActor, limit: Limit = 100, cursor: Cursor = None
) -> Page[GrantOut]:
    page = access.list_grants(node, actor, limit=limit, cursor=cursor)
    return Page[GrantOut](items=[GrantOut(**g) for g in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/grants/{grant_id}",
    response_model=GrantOut,
    operation_id="revoke_grant",
    tags=["access"],
    summary="Revoke a grant you gave",
)
@guard()
def revoke_grant(node: NodeDep, actor: CurrentActor, grant_id: str) -> GrantOut:
    return GrantOut(**access.revoke_grant(node, actor, grant_id))
