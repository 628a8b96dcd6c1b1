"""Public endpoints: the node's identity and its transparency log (public by design)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query

from metrocloud import __version__
from metrocloud.api.deps import GuardedRoute, NodeDep, body_doc, json_body
from metrocloud.api.schemas import (
    ConsistencyProofOut,
    EntryOut,
    InclusionProofOut,
    NodeOut,
    TokenOut,
    TokenRequest,
    TreeHeadOut,
)
from metrocloud.domain.errors import InvalidInput
from metrocloud.ledger import leaf_hash
from metrocloud.services import parties as svc

router = APIRouter(route_class=GuardedRoute)
MAX_INDEX = 2**48


@router.get(
    "/node",
    response_model=NodeOut,
    operation_id="get_node",
    tags=["node"],
    summary="Node identity and public key",
)
def get_node(node: NodeDep) -> NodeOut:
    return NodeOut(
        node_id=node.node_id,
        name=node.settings.node_name,
        country=node.country,
        algorithm=node.key.algorithm.value,
        key_id=node.key.key_id,
        public_key=node.key.public_key.to_pem(),
        log_id=node.log.log_id,
        version=__version__,
    )


@router.get("/health", operation_id="get_health", tags=["node"], summary="Liveness")
def health(node: NodeDep) -> dict[str, str]:
    with node.db.read() as conn:
        node.log.tree_size(conn)
    return {"status": "ok"}


@router.get(
    "/ledger/head",
    response_model=TreeHeadOut,
    operation_id="get_ledger_head",
    tags=["ledger"],
    summary="Newest signed tree head",
)
def ledger_head(node: NodeDep) -> TreeHeadOut:
    with node.db.write() as conn:
        head = node.log.latest_head(conn) or node.log.sign_head(conn)
    return TreeHeadOut(**head.to_json())


@router.get(
    "/ledger/heads/{tree_size}",
    response_model=TreeHeadOut,
    operation_id="get_ledger_head_at",
    tags=["ledger"],
    summary="The signed tree head the node issued at a given size",
)
def ledger_head_at(node: NodeDep, tree_size: int) -> TreeHeadOut:
    if not 0 <= tree_size < MAX_INDEX:
        raise InvalidInput(f"tree_size must be between 0 and 2^48, got {tree_size}")
    with node.db.read() as conn:
        head = node.log.head(conn, tree_size)
    return TreeHeadOut(**head.to_json())


@router.get(
    "/ledger/entries/{index}",
    response_model=EntryOut,
    operation_id="get_ledger_entry",
    tags=["ledger"],
    summary="One log entry",
)
def ledger_entry(node: NodeDep, index: int) -> EntryOut:
    if not 0 <= index < MAX_INDEX:
        raise InvalidInput(f"index must be between 0 and 2^48, got {index}")
    with node.db.read() as conn:
        entry = node.log.entry(conn, index)
    return EntryOut(
        index=index, entry=base64.b64encode(entry).decode(), leaf_hash=leaf_hash(entry).hex()
    )


@router.get(
    "/ledger/proof/inclusion",
    response_model=InclusionProofOut,
    operation_id="get_inclusion_proof",
    tags=["ledger"],
    summary="RFC 9162 inclusion proof (audit path)",
)
def inclusion(
    node: NodeDep,
    leaf_index: Annotated[int, Query(ge=0, lt=MAX_INDEX)],
    tree_size: Annotated[int, Query(ge=1, lt=MAX_INDEX)],
) -> InclusionProofOut:
    with node.db.read() as conn:
        path = node.log.inclusion_proof(conn, leaf_index, tree_size)
    return InclusionProofOut(
        leaf_index=leaf_index, tree_size=tree_size, audit_path=[h.hex() for h in path]
    )


@router.get(
    "/ledger/proof/consistency",
    response_model=ConsistencyProofOut,
    operation_id="get_consistency_proof",
    tags=["ledger"],
    summary="RFC 9162 consistency proof between two tree sizes",
)
def consistency(
    node: NodeDep,
    first: Annotated[int, Query(ge=1, lt=MAX_INDEX)],
    second: Annotated[int, Query(ge=1, lt=MAX_INDEX)],
) -> ConsistencyProofOut:
    with node.db.read() as conn:
        proof = node.log.consistency_proof(conn, first, second)
    return ConsistencyProofOut(first=first, second=second, proof=[h.hex() for h in proof])


@router.post(
    "/auth/token",
    response_model=TokenOut,
    status_code=201,
    operation_id="request_token",
    tags=["auth"],
    summary="A bearer token, by proof of possession of the party key",
    openapi_extra=body_doc(TokenRequest),
)
def request_token(
    node: NodeDep, body: Annotated[TokenRequest, json_body(TokenRequest)]
) -> TokenOut:
    cred = svc.token_by_proof(node, body.model_dump())
    return TokenOut(
        token_id=cred.token_id, party_id=cred.party_id, token=cred.token, expires_at=cred.expires_at
    )
