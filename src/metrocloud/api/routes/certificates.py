"""EU-type examination certificates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query

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
    CertificateChangeIn,
    CertificateIn,
    CertificateOut,
    CertificateRecorded,
    CertificateRevisionIn,
    HistoryOut,
    Page,
)
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateAction, CertificateStatus
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import SoftwareIdentification
from metrocloud.services import certificates as svc
from metrocloud.services.common import Actor
from metrocloud.services.node import Node

router = APIRouter(route_class=GuardedRoute, tags=["certificates"])
NB = PartyRole.NOTIFIED_BODY
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200)]


def _issuer(node: Node, actor: Actor, path: Mapping[str, Any]) -> None:
    svc.check_certificate_owner(node, actor, path["certificate_id"])


def _software(items: Any) -> tuple[SoftwareIdentification, ...]:
    return tuple(SoftwareIdentification(**s.model_dump()) for s in items)


@router.post(
    "/certificates",
    response_model=CertificateRecorded,
    status_code=201,
    operation_id="issue_certificate",
    summary="Issue an EU-type examination certificate",
    openapi_extra=body_doc(CertificateIn),
)
@guard(NB, action="issue EU-type examination certificates")
def issue(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    body: Annotated[CertificateIn, json_body(CertificateIn)],
) -> CertificateRecorded:
    draft = svc.CertificateDraft(
        number=body.number,
        holder_id=body.holder_id,
        category=body.category,
        model=body.model,
        accuracy_class=body.accuracy_class,
        software=_software(body.software),
        module=body.module,
        rated_conditions=body.rated_conditions,
        issued_on=body.issued_on,
        valid_until=body.valid_until,
    )
    cert, leaf = svc.issue_certificate(node, actor, draft, extra)
    return CertificateRecorded(certificate=CertificateOut(**cert), leaf_index=leaf)


@router.get(
    "/certificates",
    response_model=Page[CertificateOut],
    operation_id="list_certificates",
    summary="List and filter certificates",
)
@guard()
def list_(
    node: NodeDep,
    actor: CurrentActor,
    limit: Limit = 100,
    cursor: Cursor = None,
    notified_body_id: str | None = None,
    holder_id: str | None = None,
    category: InstrumentCategory | None = None,
    status: CertificateStatus | None = None,
    number: Annotated[str | None, Query(max_length=80)] = None,
) -> Page[CertificateOut]:
    page = svc.list_certificates(
        node,
        notified_body_id=notified_body_id,
        holder_id=holder_id,
        category=category,
        status=status,
        number=number,
        limit=limit,
        cursor=cursor,
    )
    return Page[CertificateOut](
        items=[CertificateOut(**c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/certificates/{certificate_id}",
    response_model=CertificateOut,
    operation_id="get_certificate",
    summary="One certificate",
)
@guard()
def get(node: NodeDep, actor: CurrentActor, certificate_id: str) -> CertificateOut:
    return CertificateOut(**svc.get_certificate(node, certificate_id))


@router.get(
    "/certificates/{certificate_id}/history",
    response_model=list[HistoryOut],
    operation_id="get_certificate_history",
    summary="Issue, revisions, status changes",
)
@guard()
def history(node: NodeDep, actor: CurrentActor, certificate_id: str) -> list[HistoryOut]:
    return [HistoryOut(**h) for h in svc.history(node, certificate_id)]


@router.post(
    "/certificates/{certificate_id}/revise",
    response_model=CertificateRecorded,
    operation_id="revise_certificate",
    summary="Revise (new revision number)",
    openapi_extra=body_doc(CertificateRevisionIn),
)
@guard(NB, check=_issuer, action="revise certificates")
def revise(
    node: NodeDep,
    actor: CurrentActor,
    extra: StatementExtra,
    certificate_id: str,
    body: Annotated[CertificateRevisionIn, json_body(CertificateRevisionIn)],
) -> CertificateRecorded:
    changes: dict[str, Any] = {}
    for name in ("model", "accuracy_class", "rated_conditions"):
        value = getattr(body, name)
        if value is not None:
            changes[name] = value
    if body.software is not None:
        changes["software"] = [s.as_dict() for s in _software(body.software)]
    if body.valid_until is not None:
        changes["valid_until"] = body.valid_until.isoformat()
    cert, leaf = svc.change_certificate(
        node,
        actor,
        certificate_id,
        CertificateAction.REVISE,
        reason=body.reason,
        changes=changes,
        extra=extra,
    )
    return CertificateRecorded(certificate=CertificateOut(**cert), leaf_index=leaf)


def _status_route(action: CertificateAction, summary: str) -> None:
    @router.post(
        f"/certificates/{{certificate_id}}/{action.value}",
        response_model=CertificateRecorded,
        operation_id=f"{action.value}_certificate",
        summary=summary,
        openapi_extra=body_doc(CertificateChangeIn),
    )
    @guard(NB, check=_issuer, action=f"{action.value} certificates")
    def change(
        node: NodeDep,
        actor: CurrentActor,
        extra: StatementExtra,
        certificate_id: str,
        body: Annotated[CertificateChangeIn, json_body(CertificateChangeIn)],
    ) -> CertificateRecorded:
        cert, leaf = svc.change_certificate(
            node, actor, certificate_id, action, reason=body.reason, extra=extra
        )
        return CertificateRecorded(certificate=CertificateOut(**cert), leaf_index=leaf)


_status_route(CertificateAction.SUSPEND, "Suspend (issuing notified body)")
_status_route(CertificateAction.REINSTATE, "Reinstate a suspended certificate")
_status_route(CertificateAction.WITHDRAW, "Withdraw (final)")
