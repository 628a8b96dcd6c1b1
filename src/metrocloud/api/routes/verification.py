"""Remote verification: device event-log upload, evaluation, signed results, history."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
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
from metrocloud.api.routes.instruments import READERS
from metrocloud.api.schemas import MAX_BATCH, EventRecorded, In, Out, Page
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.services import event_logs
from metrocloud.services import verification as svc
from metrocloud.services.common import Actor
from metrocloud.services.node import Node

router = APIRouter(route_class=GuardedRoute)

#: most bytes in one event-log upload (10,000 records of a few hundred bytes fit)
MAX_LOG_BODY = 16 * 1024 * 1024
_MEDIA = ("application/x-ndjson", "application/jsonl", "text/plain")


def _uploader(node: Node, actor: Actor, path: Mapping[str, Any]) -> None:
    event_logs.check_may_upload(node, actor, path["instrument_id"])


class EventLogUploaded(Out):
    instrument_id: str
    records: int = Field(description="records of the device's event log the node now holds")
    appended: int = Field(description="records this upload added (0: nothing new)")
    head: str = Field(description="hex SHA-256 of the last record's signed bytes")
    key_id: str = Field(description="the device key the records are signed with")


@router.put(
    "/instruments/{instrument_id}/event-log",
    response_model=EventLogUploaded,
    operation_id="upload_event_log",
    tags=["verification"],
    summary="Upload the device's event log (append-only, verified against the device key)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                m: {
                    "schema": {
                        "type": "string",
                        "description": "the device's event-log records, one canonical JSON "
                        "line each (docs/device.md), from seq 1 or continuing the stored log",
                    }
                }
                for m in _MEDIA
            },
        }
    },
)
@guard(*event_logs.UPLOADERS, check=_uploader, action="upload device event logs")
async def upload_event_log(
    request: Request, node: NodeDep, actor: CurrentActor, instrument_id: str
) -> EventLogUploaded:
    """The instrument's manufacturer or operator (a head-end system) sends the device's
    event log as the device wrote it. A later upload must extend the stored one; a rewritten
    history is refused (409) and a record failing the chain, key or signature check too
    (400, naming the seq and the check); both are quarantined as evidence, and the stored
    log stays as it was (docs/verification.md#event-log-upload)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _MEDIA:
        raise HTTPException(
            415, f"send the event log as {_MEDIA[0]} (one record a line), not {media!r}"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOG_BODY:
            raise HTTPException(
                413, f"request body exceeds {MAX_LOG_BODY} bytes; upload the log in parts"
            )
    out = await run_in_threadpool(
        event_logs.upload_event_log, node, actor, instrument_id, bytes(body)
    )
    return EventLogUploaded(**out)


class EvaluateIn(In):
    instrument_ids: list[str] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="the instruments to verify (one lot, at most the node's max_batch)",
    )
    at: datetime | None = Field(
        None, description="evaluation time (RFC 3339); default now, never in the future"
    )


class EvaluateOut(Out):
    passed: int
    failed: int
    results: list[dict[str, Any]] = Field(
        description="one verification result per instrument, in request order: the object "
        "the authority signs (RFC 8785 canonical JSON, docs/verification.md#signing)"
    )


@router.post(
    "/verifications/evaluate",
    response_model=EvaluateOut,
    operation_id="evaluate_verification",
    tags=["verification"],
    summary="Run the remote-verification checklist on a lot (nothing is recorded)",
    openapi_extra=body_doc(EvaluateIn),
)
@guard(PartyRole.AUTHORITY, action="verify instruments")
def evaluate(
    node: NodeDep,
    actor: CurrentActor,
    body: Annotated[EvaluateIn, json_body(EvaluateIn)],
) -> Response:
    if len(body.instrument_ids) > node.settings.max_batch:
        raise InvalidInput(
            f"a lot holds at most {node.settings.max_batch} instruments, "
            f"got {len(body.instrument_ids)}"
        )
    results = svc.evaluate(node, actor, body.instrument_ids, at=body.at)
    passed = sum(1 for r in results if r.passed)
    payload = {
        "passed": passed,
        "failed": len(results) - passed,
        "results": [r.to_json() for r in results],
    }
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


class SignedResultsIn(In):
    results: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description='signed results: {"result": <as evaluated>, "signature": {"key_id", '
        '"alg", "sig" (standard base64)}}, signed by the recording authority',
    )


class VerificationsRecorded(Out):
    recorded: list[EventRecorded]


@router.post(
    "/verifications",
    response_model=VerificationsRecorded,
    status_code=201,
    operation_id="record_verifications",
    tags=["verification"],
    summary="Record signed verification results (one transaction for the lot)",
    openapi_extra=body_doc(SignedResultsIn),
)
@guard(PartyRole.AUTHORITY, action="record verification results")
def record(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[SignedResultsIn, json_body(SignedResultsIn)],
) -> VerificationsRecorded:
    signed = []
    for index, item in enumerate(body.results):
        try:
            signed.append(svc.SignedResult.from_json(item))
        except InvalidInput as exc:
            raise InvalidInput(f"results[{index}]: {exc.message}", rule=exc.rule) from None
    out = svc.record(node, actor, signed, extra)
    return VerificationsRecorded(recorded=[EventRecorded(**e) for e in out])


class VerificationOut(Out):
    event_id: str
    seq: int
    kind: str = Field(description="verified or verification_failed")
    outcome: str = Field(description="pass or fail")
    occurred_at: str
    recorded_by: str = Field(description="the authority")
    verified_until: str | None
    reason: str | None = Field(description="why it failed (every finding)")
    override: str | None = Field(
        description="the authority's reason for deciding against the node's evaluation"
    )
    result: dict[str, Any] | None = Field(
        description="the signed result (null if recorded by hand)"
    )
    signature: dict[str, Any] | None = Field(description="the authority's signature over it")
    leaf_index: int


@router.get(
    "/instruments/{instrument_id}/verifications",
    response_model=Page[VerificationOut],
    operation_id="list_verifications",
    tags=["verification"],
    summary="An instrument's verifications with their signed results",
)
@guard(*READERS, action="read verifications")
def verifications(
    node: NodeDep,
    actor: CurrentActor,
    instrument_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[VerificationOut]:
    page = svc.list_verifications(node, actor, instrument_id, limit=limit, cursor=cursor)
    return Page[VerificationOut](
        items=[VerificationOut(**v) for v in page.items], next_cursor=page.next_cursor
    )
