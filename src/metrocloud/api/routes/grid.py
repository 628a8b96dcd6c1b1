"""The Legal Metrology Grid: node-to-node endpoints, the grid status, statistics, alerts.

Node-to-node (``POST /grid/messages``, ``POST /grid/queries/{kind}``) authenticate the
calling *node* by its signed request (docs/grid.md#transport), never a party token, and
sign their answers. The rest are for parties, behind the usual guard.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from metrocloud.api.deps import (
    CurrentActor,
    GuardedRoute,
    MalformedJson,
    NodeDep,
    StatementExtra,
    body_doc,
    guard,
    json_body,
)
from metrocloud.api.problems import problem_for
from metrocloud.api.schemas import In, Out, Page, TreeHeadOut
from metrocloud.domain.errors import MetrocloudError
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.errors import NodeUnauthenticated
from metrocloud.grid.signing import NODE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, sign_response
from metrocloud.services import alerts as alert_svc
from metrocloud.services import federation as fed
from metrocloud.services.node import Node

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute)
_R = PartyRole
MAX_BODY = 64 * 1024 * 1024


# -- node-to-node -----------------------------------------------------------------------------


def _target(request: Request) -> str:
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _signed(node: Node, request: Request, sender: str, status: int, body: bytes) -> Response:
    nonce = request.headers.get(NONCE_HEADER, "")
    sig = sign_response(
        node.key, sender=node.node_id, receiver=sender, nonce=nonce, status=status, body=body
    )
    media = "application/json" if status < 400 else "application/problem+json"
    return Response(body, status_code=status, media_type=media, headers={SIGNATURE_HEADER: sig})


async def _node_call(request: Request, work: Any) -> Response:
    """Authenticate the calling node, run ``work(node, sender, parsed_body)``, sign."""
    node: Node = request.app.state.node
    if NODE_HEADER not in request.headers:  # no node at all: refused before the body is read
        return problem_for(
            NodeUnauthenticated(
                f"this endpoint takes signed node-to-node requests ({NODE_HEADER}, ...; "
                "docs/grid.md#transport), not a party's token"
            ),
            request.url.path,
        )
    body = await request.body()
    if len(body) > MAX_BODY:
        return problem_for(
            MalformedJson(f"a node request carries at most {MAX_BODY} bytes, got {len(body)}"),
            request.url.path,
        )
    try:
        sender = await run_in_threadpool(
            fed.authenticate_node,
            node,
            request.headers,
            method=request.method,
            target=_target(request),
            body=body,
        )
    except MetrocloudError as exc:  # no node to sign for: an unsigned refusal
        return problem_for(exc, request.url.path)
    try:
        try:
            parsed = json.loads(body) if body else {}
        except ValueError as exc:
            raise MalformedJson(f"request body is not valid JSON: {exc}") from None
        answer = await run_in_threadpool(work, node, sender, parsed)
        status, out = 200, json.dumps(answer, separators=(",", ":"), default=str).encode()
    except MetrocloudError as exc:
        refusal = problem_for(exc, request.url.path)
        status, out = refusal.status_code, bytes(refusal.body)
    await run_in_threadpool(
        fed.record_incoming,
        node,
        sender,
        method=request.method,
        path=request.url.path,
        status=status,
        request=body,
        response=out,
    )
    return _signed(node, request, sender.node_id, status, out)


_NODE_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid node signature (a party token is not accepted)"},
}


@router.post(
    "/grid/messages",
    operation_id="grid_receive_messages",
    tags=["grid"],
    summary="Node-to-node: deliver outbox messages (signed by the sending node)",
    responses=_NODE_ONLY,
)
async def receive_messages(request: Request) -> Response:
    return await _node_call(request, fed.receive_messages)


@router.post(
    "/grid/queries/{kind}",
    operation_id="grid_answer_query",
    tags=["grid"],
    summary="Node-to-node: a look-up, a statistic, a tree head, gossip (signed by the asker)",
    responses=_NODE_ONLY,
)
async def answer_query(request: Request, kind: str) -> Response:
    return await _node_call(
        request, lambda node, sender, body: fed.answer_query(node, sender, kind, body)
    )


# -- for parties ------------------------------------------------------------------------------


class OutboxOut(Out):
    pending: int
    failed: int
    delivered: int
    oldest_pending_at: str | None
    last_error: str | None


class WitnessedHeadOut(Out):
    tree_size: int
    root_hash: str
    timestamp: int
    observed_by: str
    observed_at: str


class NodeEntryOut(Out):
    node_id: str
    country: str
    base_url: str
    key_id: str
    expires_at: str
    is_self: bool
    removed: bool
    leaf_index: int


class PeerStatusOut(NodeEntryOut):
    outbox: OutboxOut
    last_contact_at: str | None
    last_delivery_at: str | None
    last_error_at: str | None
    last_error: str | None
    witnessed_head: WitnessedHeadOut | None = Field(
        description="the newest head of the peer this node verified (fetched or gossiped)"
    )


class GridStatusOut(Out):
    node_id: str
    country: str
    joined: bool
    self_node: NodeEntryOut | None = Field(description="this node's own admission")
    tree_head: TreeHeadOut | None
    cosigned_by: list[str] = Field(description="witnesses that co-signed the newest head")
    peers: list[PeerStatusOut]


@router.get(
    "/grid/status",
    response_model=GridStatusOut,
    operation_id="grid_status",
    tags=["grid"],
    summary="Peers, lag (outbox backlog, last contact) and the last witnessed heads",
)
@guard(_R.NODE_ADMIN, _R.AUTHORITY, action="read the grid status")
def status(node: NodeDep, actor: CurrentActor) -> GridStatusOut:
    return GridStatusOut(**fed.grid_status(node, actor))


class StatGroupOut(Out):
    key: str
    label: str | None = None
    instruments: int
    non_compliant: int
    rate: float
    nodes: int = Field(description="how many nodes reported this group")


class StatNodeOut(Out):
    node_id: str
    country: str
    status: str = Field(description="ok or unavailable")
    detail: str | None = None
    suppressed_groups: int | None = None
    min_group_size: int | None = None


class StatisticOut(Out):
    statistic: str
    by: str
    groups: list[StatGroupOut]
    nodes: list[StatNodeOut]
    complete: bool = Field(description="every node answered")


@router.get(
    "/grid/statistics/{statistic}",
    response_model=StatisticOut,
    operation_id="grid_statistic",
    tags=["grid"],
    summary="A statistic over every node of the grid, from aggregates only",
)
@guard(_R.AUTHORITY, _R.NOTIFIED_BODY, action="ask for federated statistics")
def statistic(
    node: NodeDep,
    actor: CurrentActor,
    statistic: str,
    by: Annotated[str, Query(pattern="^(type|category)$")] = "type",
) -> StatisticOut:
    return StatisticOut(**fed.federated_statistic(node, actor, statistic, by))


class CosignatureOut(Out):
    witness: str
    log_id: str
    tree_size: int
    root_hash: str
    timestamp: int
    signed_at: str
    key_id: str
    alg: str
    sig: str


class CosignaturesOut(Out):
    log_id: str
    cosignatures: list[CosignatureOut]


@router.get(
    "/grid/cosignatures",
    response_model=CosignaturesOut,
    operation_id="grid_cosignatures",
    tags=["grid"],
    summary="Witnesses' cosignatures over this node's tree heads (public)",
)
def cosignatures(
    node: NodeDep, tree_size: Annotated[int | None, Query(ge=0, le=2**48)] = None
) -> CosignaturesOut:
    return CosignaturesOut(**fed.cosignatures_of(node, tree_size))


# -- alerts -----------------------------------------------------------------------------------


class AlertIn(In):
    subject_type: str = Field(description="instrument, certificate or party")
    subject_id: str = Field(max_length=40)
    severity: str = Field(description="low, medium, high or serious")
    title: str = Field(max_length=300)
    description: str = Field(max_length=4000)
    measures: list[str] = Field(default_factory=list, max_length=50)


class AlertOut(Out):
    id: str
    kind: str = Field(description="market_surveillance, non_compliance or split_view")
    origin_node_id: str
    country: str
    raised_by: str
    raised_at: str
    subject_type: str
    subject_id: str
    severity: str
    title: str
    details: dict[str, Any]
    leaf_index: int


@router.post(
    "/grid/alerts",
    response_model=AlertOut,
    status_code=201,
    operation_id="raise_grid_alert",
    tags=["grid"],
    summary="Raise a market-surveillance alert (sent to every node of the grid)",
    openapi_extra=body_doc(AlertIn),
)
@guard(_R.AUTHORITY, action="raise market-surveillance alerts")
def raise_alert(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[AlertIn, json_body(AlertIn)],
) -> AlertOut:
    return AlertOut(
        **alert_svc.raise_alert(
            node,
            actor,
            subject_type=body.subject_type,
            subject_id=body.subject_id,
            severity=body.severity,
            title=body.title,
            description=body.description,
            measures=body.measures,
            extra=extra,
        )
    )


@router.get(
    "/grid/alerts",
    response_model=Page[AlertOut],
    operation_id="list_grid_alerts",
    tags=["grid"],
    summary="The alert board: alerts, other nodes' non-compliance notices, split views",
)
@guard(action="read the alert board")
def list_alerts(
    node: NodeDep,
    actor: CurrentActor,
    kind: Annotated[str | None, Query(max_length=20)] = None,
    subject_id: Annotated[str | None, Query(max_length=80)] = None,
    country: Annotated[str | None, Query(pattern="^[A-Z]{2}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[AlertOut]:
    page = alert_svc.list_alerts(
        node, actor, kind=kind, subject_id=subject_id, country=country, limit=limit, cursor=cursor
    )
    return Page[AlertOut](items=[AlertOut(**a) for a in page.items], next_cursor=page.next_cursor)
