"""E-compliance reports per instrument, manufacturer and type: JSON, HTML or PDF by Accept."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.api.problems import problem_response
from metrocloud.api.schemas import Out
from metrocloud.domain.parties import PartyRole
from metrocloud.services import compliance as svc
from metrocloud.services.compliance import Criterion, Outcome

router = APIRouter(route_class=GuardedRoute, tags=["compliance"])

_R = PartyRole
_HTML_HEADERS = {
    # the page fetches nothing and runs nothing; the same policy is in its <meta> element
    "Content-Security-Policy": svc.HTML_CSP,
    "X-Content-Type-Options": "nosniff",
}


class EvidenceOut(Out):
    kind: str = Field(
        description="certificate, certificate_history, software, flag, event or declaration"
    )
    id: str
    at: str | None = Field(description="the record's date or time")
    leaf_index: int | None = Field(
        description="ledger leaf of the signed statement behind the record (null: the record "
        "is no statement, e.g. an intake flag)"
    )
    detail: str


class CriterionOut(Out):
    criterion: Criterion
    outcome: Outcome
    summary: str = Field(description="the finding in one sentence")
    evidence: list[EvidenceOut]


class InstrumentInfoOut(Out):
    id: str
    serial: str
    manufacturer_id: str
    manufacturer_name: str
    certificate_id: str
    certificate_number: str
    model: str
    category: str
    state: str
    operator_id: str | None
    region: str | None
    verified_until: date | None
    software: dict[str, Any] | None
    registered_leaf: int
    leaf_index: int


class TimelineEventOut(Out):
    seq: int
    id: str
    kind: str
    occurred_at: str
    leaf_index: int
    verified_until: str | None


class InstrumentReportOut(Out):
    kind: Literal["instrument"]
    as_of: date = Field(description="the date the criteria are judged on (node time, UTC)")
    generated_at: str
    node_id: str
    instrument: InstrumentInfoOut
    criteria: list[CriterionOut]
    verdict: Outcome = Field(description="fail if any criterion fails")
    events: list[TimelineEventOut] = Field(description="the newest 200 life-cycle events")
    events_total: int


class CriterionCountOut(Out):
    criterion: Criterion
    passed: int
    failed: int
    not_applicable: int


class FailingInstrumentOut(Out):
    id: str
    serial: str
    certificate_id: str
    state: str
    failed: list[Criterion]


class FailingPageOut(Out):
    total: int = Field(description="failing instruments in all, on every page")
    items: list[FailingInstrumentOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class MonthCountOut(Out):
    month: str
    count: int
    overdue: int


class NonComplianceMonthOut(Out):
    month: str
    found: int
    closed: int
    open: int


class CertificatePointOut(Out):
    at: str
    certificate_id: str
    number: str
    action: str
    status: str
    leaf_index: int | None


class CertificateLineOut(Out):
    id: str
    number: str
    model: str
    category: str
    notified_body_id: str
    status: str
    valid_until: date
    leaf_index: int
    instruments: int
    failing: int


class FleetSubjectOut(Out):
    id: str
    name: str
    country: str | None
    holder_id: str | None
    notified_body_id: str | None
    number: str | None
    status: str | None
    valid_until: date | None
    leaf_index: int | None


class FleetReportOut(Out):
    kind: Literal["manufacturer", "type"]
    as_of: date
    generated_at: str
    node_id: str
    subject: FleetSubjectOut
    instruments: int
    passing: int
    verdict: Outcome = Field(description="fail if any instrument fails a criterion")
    counts: list[CriterionCountOut]
    failing: FailingPageOut
    certificates: list[CertificateLineOut]
    verification_due: list[MonthCountOut]
    never_verified: int
    non_compliances: list[NonComplianceMonthOut]
    certificate_history: list[CertificatePointOut]


_MEDIA = {
    "application/json": "json",
    "application/*": "json",
    "*/*": "json",
    "text/html": "html",
    "text/*": "html",
    "application/pdf": "pdf",
}


def _format(accept: str | None) -> str | None:
    """The format the Accept header asks for (JSON without one); None: none we write."""
    if not accept or not accept.strip():
        return "json"
    ranked = []
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.replace(" ", "").startswith("q="):
                try:
                    q = float(p.split("=", 1)[1])
                except ValueError:
                    q = 0.0
        if q > 0 and media.lower() in _MEDIA:
            ranked.append((-q, i, _MEDIA[media.lower()]))
    return min(ranked)[2] if ranked else None


def _not_acceptable(request: Request) -> Response:
    return problem_response(
        406,
        "Not acceptable",
        f"cannot answer {request.headers.get('accept')!r}; a compliance report is "
        "application/json, text/html or application/pdf",
        code="not-acceptable",
        instance=request.url.path,
    )


def _answer(report: svc.Report, fmt: str) -> Any:
    name = report.instrument.id if isinstance(report, svc.InstrumentReport) else report.subject.id
    if fmt == "html":
        return Response(svc.render_html(report), media_type="text/html", headers=_HTML_HEADERS)
    if fmt == "pdf":
        return Response(
            svc.render_pdf(report),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="compliance-{name}.pdf"'},
        )
    model = InstrumentReportOut if isinstance(report, svc.InstrumentReport) else FleetReportOut
    return model.model_validate(svc.as_json(report))


_FORMATS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON (default), HTML (`Accept: text/html`, one "
        "self-contained page with inline SVG charts) or PDF (`Accept: application/pdf`)",
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    406: {
        "description": "The Accept header names no format a report is written in",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    },
}
Limit = Annotated[int, Query(ge=1, le=1000, description="failing instruments per page")]
Cursor = Annotated[str | None, Query(max_length=200)]


@router.get(
    "/compliance/instruments/{instrument_id}",
    response_model=InstrumentReportOut,
    responses=_FORMATS_DOC,
    operation_id="instrument_compliance_report",
    summary="E-compliance report of one instrument",
)
@guard(_R.AUTHORITY, _R.MANUFACTURER, _R.NOTIFIED_BODY, action="read compliance reports")
def instrument_report(
    request: Request, node: NodeDep, actor: CurrentActor, instrument_id: str
) -> Any:
    fmt = _format(request.headers.get("accept"))
    if fmt is None:
        return _not_acceptable(request)
    return _answer(svc.instrument_report(node, actor, instrument_id), fmt)


@router.get(
    "/compliance/manufacturers/{party_id}",
    response_model=FleetReportOut,
    responses=_FORMATS_DOC,
    operation_id="manufacturer_compliance_report",
    summary="E-compliance report over a manufacturer's instruments",
)
@guard(_R.AUTHORITY, _R.MANUFACTURER, action="read manufacturer compliance reports")
def manufacturer_report(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    party_id: str,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Any:
    fmt = _format(request.headers.get("accept"))
    if fmt is None:
        return _not_acceptable(request)
    report = svc.manufacturer_report(node, actor, party_id, limit=limit, cursor=cursor)
    return _answer(report, fmt)


@router.get(
    "/compliance/types/{certificate_id}",
    response_model=FleetReportOut,
    responses=_FORMATS_DOC,
    operation_id="type_compliance_report",
    summary="E-compliance report over the instruments of a type (its certificate)",
)
@guard(_R.AUTHORITY, _R.MANUFACTURER, _R.NOTIFIED_BODY, action="read type compliance reports")
def type_report(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    certificate_id: str,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Any:
    fmt = _format(request.headers.get("accept"))
    if fmt is None:
        return _not_acceptable(request)
    report = svc.type_report(node, actor, certificate_id, limit=limit, cursor=cursor)
    return _answer(report, fmt)
