"""Confidential exchange: encryption keys, end-to-end encrypted documents, receipts
(services/exchange.py, docs/exchange.md). The node sees envelopes and ciphertext only."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from metrocloud.api.deps import (
    CurrentActor,
    GuardedRoute,
    NodeDep,
    StatementExtra,
    body_doc,
    guard,
    json_body,
)
from metrocloud.api.schemas import In, Out, Page
from metrocloud.domain.errors import InvalidInput
from metrocloud.services import exchange as svc
from metrocloud.services.common import Actor
from metrocloud.services.node import Node

router = APIRouter(route_class=GuardedRoute)
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=200, description="From `next_cursor`.")]
ROLES = svc.EXCHANGE_ROLES
_PARTY = r"^pty-[A-Z]{2}-[0-9A-HJKMNP-TV-Z]{26}$"
#: the route hands the service at least this much ciphertext at a time (fewer thread hops)
_WRITE_BLOCK = 1024 * 1024


class SignatureIn(In):
    key_id: str
    alg: str
    sig: str


class KeyBindingIn(In):
    """A party's X25519 key, signed with its registered signing key (docs/exchange.md#keys)."""

    payload: dict[str, Any] = Field(
        description="{party_id, alg: X25519, public_key (base64), key_id, created_at}"
    )
    signature: SignatureIn


class EncryptionKeyOut(Out):
    party_id: str
    key_id: str = Field(description="hex SHA-256 of the key's DER SubjectPublicKeyInfo")
    public_key: str = Field(description="base64 of the 32-byte X25519 public key")
    created_at: str
    binding: dict[str, Any] = Field(description="the signed binding: check it yourself")
    signing_key: str | None = Field(
        description="the party's registered signing key (base64 SPKI) the binding verifies with"
    )
    leaf_index: int | None = None


class RecipientOut(Out):
    party_id: str
    delivery: str = Field(description="`local`, or the country of the node it is delivered to")
    fetched_at: str | None
    acknowledged_at: str | None


class MessageSummaryOut(Out):
    id: str
    sender_id: str
    recipients: list[RecipientOut]
    content_type: str
    size: int = Field(description="plaintext bytes")
    ciphertext_size: int
    header_sha256: str = Field(description="what receipts acknowledge")
    created_at: str = Field(description="the sender's time, in the signed header")
    received_at: str = Field(description="when this node accepted it")
    leaf_index: int | None = Field(description="the exchange.sent statement in the log")


class MessageOut(MessageSummaryOut):
    envelope: dict[str, Any] = Field(description="{header, signature}: the signed envelope")
    sealed_key: dict[str, Any] | None = Field(
        description="the caller's entry of header.recipients (enc, sealed_key); null for the "
        "sender unless it is a recipient too"
    )


class ReceiptIn(In):
    """A recipient's signed receipt (docs/exchange.md#receipts)."""

    payload: dict[str, Any] = Field(
        description="{message_id, header_sha256, recipient, received_at}"
    )
    signature: SignatureIn


class ReceiptOut(Out):
    message_id: str
    recipient_id: str
    acknowledged_at: str
    leaf_index: int | None = Field(
        description="the exchange.receipt statement in this node's log; null for a receipt "
        "of a recipient on another node (the statement is in that node's log)"
    )
    receipt: dict[str, Any]


def _party_to_message(node: Node, actor: Actor, params: Mapping[str, Any]) -> None:
    svc.check_party(node, actor, str(params["message_id"]))


@router.post(
    "/exchange/keys",
    response_model=EncryptionKeyOut,
    status_code=201,
    operation_id="register_encryption_key",
    tags=["exchange"],
    summary="Publish your X25519 encryption key (signed binding)",
    openapi_extra=body_doc(KeyBindingIn),
)
@guard(*ROLES, action="take part in confidential exchange")
def register_key(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[KeyBindingIn, json_body(KeyBindingIn)],
) -> EncryptionKeyOut:
    return EncryptionKeyOut(**svc.register_key(node, actor, body.model_dump(), extra))


@router.get(
    "/exchange/keys/{party_id}",
    response_model=EncryptionKeyOut,
    operation_id="get_encryption_key",
    tags=["exchange"],
    summary="A party's current encryption key, with its signed binding",
)
@guard()
def get_key(node: NodeDep, actor: CurrentActor, party_id: str) -> EncryptionKeyOut:
    if not party_id.startswith("pty-") or len(party_id) != 33:
        raise InvalidInput(f"{party_id!r} is not a party id (pty-<country>-<ULID>)")
    return EncryptionKeyOut(**svc.get_key(node, actor, party_id))


@router.post(
    "/exchange/messages",
    response_model=MessageOut,
    status_code=201,
    operation_id="send_message",
    tags=["exchange"],
    summary="Send an end-to-end encrypted document (envelope and ciphertext, streamed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                svc.UPLOAD_MEDIA_TYPE: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "MCX1, 4-byte big-endian envelope length, the envelope "
                        "(canonical JSON), the ciphertext",
                    }
                }
            },
        }
    },
)
@guard(*ROLES, action="send confidential documents")
async def send(
    request: Request, node: NodeDep, actor: CurrentActor, extra: StatementExtra
) -> MessageOut:
    """The envelope is checked (sender, signature, recipients and their keys, size) before
    any ciphertext is accepted; the ciphertext is streamed to disk and checked against the
    signed header (sizes, chunk tags) before the message is recorded."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != svc.UPLOAD_MEDIA_TYPE:
        raise HTTPException(
            415, f"send the envelope and ciphertext as {svc.UPLOAD_MEDIA_TYPE}, not {media!r}"
        )
    # the largest ciphertext: the document plus a 16-byte tag per chunk of at least 64 bytes
    most = 8 + svc.MAX_ENVELOPE + node.settings.exchange_max_bytes * 5 // 4 + 16
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise HTTPException(413, f"request body of {declared} bytes exceeds {most} bytes")
    upload: svc.Upload | None = None
    head = bytearray()
    pending = bytearray()
    try:
        async for chunk in request.stream():
            if upload is None:
                head += chunk
                upload = await _begin(node, actor, head, extra)
                if upload is None:
                    continue
                pending += head[8 + int.from_bytes(head[4:8], "big") :]
            else:
                pending += chunk
            if len(pending) >= _WRITE_BLOCK:
                await run_in_threadpool(upload.write, pending)
                pending = bytearray()
        if upload is None:
            raise InvalidInput(
                f"the body ended after {len(head)} bytes, before the envelope was complete"
            )
        if pending:
            await run_in_threadpool(upload.write, pending)
        message = await run_in_threadpool(upload.finish)
    finally:
        if upload is not None:
            upload.abort()
    return MessageOut(**message)


async def _begin(
    node: Node, actor: Actor, head: bytearray, extra: dict[str, Any]
) -> svc.Upload | None:
    """The checked upload once ``head`` holds the whole envelope; None while it does not."""
    if len(head) < 8:
        return None
    if head[:4] != svc.UPLOAD_MAGIC:
        raise InvalidInput(
            f"the body must start with {svc.UPLOAD_MAGIC!r} (docs/exchange.md#sending), found "
            f"{bytes(head[:4])!r}"
        )
    size = int.from_bytes(head[4:8], "big")
    if size > svc.MAX_ENVELOPE:
        raise HTTPException(413, f"envelope of {size} bytes exceeds {svc.MAX_ENVELOPE} bytes")
    if len(head) < 8 + size:
        return None
    envelope = bytes(head[8 : 8 + size])
    return await run_in_threadpool(svc.begin_upload, node, actor, envelope, extra)


@router.get(
    "/exchange/messages",
    response_model=Page[MessageSummaryOut],
    operation_id="list_messages",
    tags=["exchange"],
    summary="Your inbox (box=in) or outbox (box=out)",
)
@guard(*ROLES, action="read confidential documents")
def list_messages(
    node: NodeDep,
    actor: CurrentActor,
    box: Literal["in", "out"] = "in",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[MessageSummaryOut]:
    page = svc.list_messages(node, actor, box=box, limit=limit, cursor=cursor)
    return Page[MessageSummaryOut](
        items=[MessageSummaryOut(**m) for m in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/exchange/messages/{message_id}",
    response_model=MessageOut,
    operation_id="get_message",
    tags=["exchange"],
    summary="A message: metadata, the signed envelope and your sealed key",
)
@guard(*ROLES, check=_party_to_message, action="read confidential documents")
def get_message(node: NodeDep, actor: CurrentActor, message_id: str) -> MessageOut:
    return MessageOut(**svc.get_message(node, actor, message_id))


@router.get(
    "/exchange/messages/{message_id}/content",
    operation_id="get_message_content",
    tags=["exchange"],
    summary="The ciphertext of a message (application/octet-stream)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
@guard(*ROLES, check=_party_to_message, action="fetch confidential documents")
def get_content(node: NodeDep, actor: CurrentActor, message_id: str) -> Response:
    """The ciphertext exactly as the sender uploaded it, after the node checked it against
    the digest it recorded on upload; ``Content-Digest`` (RFC 9530) carries that digest."""
    stored = svc.open_content(node, actor, message_id)
    digest = base64.b64encode(bytes.fromhex(stored.sha256)).decode("ascii")
    return FileResponse(
        stored.path,
        media_type="application/octet-stream",
        headers={"Content-Digest": f"sha-256=:{digest}:"},
    )


@router.post(
    "/exchange/messages/{message_id}/receipt",
    response_model=ReceiptOut,
    status_code=201,
    operation_id="acknowledge_message",
    tags=["exchange"],
    summary="Acknowledge a message with your signed receipt",
    openapi_extra=body_doc(ReceiptIn),
)
@guard(*ROLES, check=_party_to_message, action="acknowledge confidential documents")
def acknowledge(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    message_id: str,
    body: Annotated[ReceiptIn, json_body(ReceiptIn)],
) -> ReceiptOut:
    return ReceiptOut(**svc.submit_receipt(node, actor, message_id, body.model_dump(), extra))


@router.get(
    "/exchange/messages/{message_id}/receipts",
    response_model=Page[ReceiptOut],
    operation_id="list_receipts",
    tags=["exchange"],
    summary="The signed receipts of a message (all for its sender, yours for a recipient)",
)
@guard(*ROLES, check=_party_to_message, action="read receipts")
def list_receipts(node: NodeDep, actor: CurrentActor, message_id: str) -> Page[ReceiptOut]:
    items = svc.list_receipts(node, actor, message_id)
    return Page[ReceiptOut](items=[ReceiptOut(**r) for r in items], next_cursor=None)
