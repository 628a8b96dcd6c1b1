"""Public endpoints: the node's identity and its transparency log (public by design)."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from metrocloud import __version__
from metrocloud.api.deps import GuardedRoute, NodeDep, body_doc, json_body
from metrocloud.api.problems import problem_response
from metrocloud.api.ratelimit import (
    TokenBucketLimiter,
    client_address,
    limiter_for,
    retry_after,
)
from metrocloud.api.schemas import (
    ConsistencyProofOut,
    EntryOut,
    InclusionProofOut,
    NodeOut,
    PublicVerifyIn,
    PublicVerifyOut,
    TokenOut,
    TokenRequest,
    TreeHeadOut,
)
from metrocloud.domain.errors import InvalidInput
from metrocloud.ledger import leaf_hash
from metrocloud.services import parties as svc
from metrocloud.services import public_verify

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


#: largest body POST /public/verify reads (one OCMF record, or a container with one value)
VERIFY_MAX_BYTES = 64 * 1024
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@router.post(
    "/public/verify",
    response_model=PublicVerifyOut,
    operation_id="verify_ocmf_reading",
    tags=["public"],
    summary="Check a signed OCMF meter reading (no login; rate-limited per client address)",
    openapi_extra=body_doc(PublicVerifyIn),
    responses={
        "413": {"description": "Body larger than 64 KiB", "content": _PROBLEM},
        "429": {"description": "Too many requests; see Retry-After", "content": _PROBLEM},
    },
)
async def verify_reading(request: Request, node: NodeDep) -> PublicVerifyOut | Response:
    # refused before the body is read: a flood costs the node neither memory nor parsing
    limiter = limiter_for(request, "public_verify", node.settings.public_verify_per_minute)
    if limiter is not None and (wait := limiter.acquire(client_address(request))) is not None:
        return _rate_limited(request, limiter, wait)
    body = _parse_verify_body(await _read_body(request, VERIFY_MAX_BYTES))
    result = await run_in_threadpool(
        public_verify.check_reading,
        node,
        ocmf=body.ocmf,
        xml=body.xml,
        public_key=body.public_key,
    )
    return PublicVerifyOut.model_validate(result)


def _rate_limited(request: Request, limiter: TokenBucketLimiter, wait: float) -> Response:
    """429 as problem+json with Retry-After (a header the shared error handler cannot set)."""
    seconds = retry_after(wait)
    resp = problem_response(
        429,
        "Too many requests",
        f"more than {limiter.per_minute} requests a minute (bursts of {limiter.burst}) from "
        f"this address to {request.url.path}; retry in {seconds} s",
        code="rate-limited",
        instance=request.url.path,
    )
    resp.headers["Retry-After"] = seconds
    return resp


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = (
        f"request body is larger than the {limit} bytes ({limit // 1024} KiB) accepted by "
        f"{request.url.path}; send one OCMF record (or a container with one value)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, detail=too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_verify_body(raw: bytes) -> PublicVerifyIn:
    """As :func:`metrocloud.api.deps.json_body` does, after the size check."""
    try:
        return PublicVerifyIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        ) from None
