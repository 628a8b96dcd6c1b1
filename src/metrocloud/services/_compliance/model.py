"""What an e-compliance report holds: criteria, outcomes, evidence, fleet aggregates.

Frozen keyword-only dataclasses; :func:`as_json` turns any of them into plain JSON values
(enums to their values, dates to ISO 8601), the form the API answers and the CLI writes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from enum import Enum, StrEnum
from typing import Any, Literal

__all__ = [
    "CRITERIA",
    "CSP",
    "CertificateLine",
    "CertificatePoint",
    "Criterion",
    "CriterionCount",
    "CriterionInfo",
    "CriterionResult",
    "Evidence",
    "FailingInstrument",
    "FailingPage",
    "FleetReport",
    "FleetSubject",
    "InstrumentInfo",
    "InstrumentReport",
    "MonthCount",
    "NonComplianceMonth",
    "Outcome",
    "Report",
    "TimelineEvent",
    "as_json",
    "verdict_of",
]


#: the Content-Security-Policy of an HTML report: nothing fetched, nothing run
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"


class Criterion(StrEnum):
    CERTIFICATE_VALID = "certificate_valid"
    SOFTWARE_APPROVED = "software_approved"
    VERIFICATION_CURRENT = "verification_current"
    DECLARATION_PRESENT = "declaration_present"
    NO_OPEN_NON_COMPLIANCE = "no_open_non_compliance"


@dataclass(frozen=True, kw_only=True, slots=True)
class CriterionInfo:
    criterion: Criterion
    title: str
    question: str
    rule: str


#: the criteria, in report order, with the question each answers and the rule behind it
CRITERIA: tuple[CriterionInfo, ...] = (
    CriterionInfo(
        criterion=Criterion.CERTIFICATE_VALID,
        title="Certificate valid",
        question="Is the EU-type examination certificate of the type valid today "
        "(not suspended, withdrawn or past its date)?",
        rule="MID 2014/32/EU Annex II module B points 6 and 7",
    ),
    CriterionInfo(
        criterion=Criterion.SOFTWARE_APPROVED,
        title="Software approved",
        question="Is the installed legally relevant software one the certificate approves, "
        "and has the intake seen no unapproved software since the last update?",
        rule="WELMEC 7.2 S1; MID 2014/32/EU Annex II module B point 3",
    ),
    CriterionInfo(
        criterion=Criterion.VERIFICATION_CURRENT,
        title="Verification current",
        question="For an instrument in service: is its verification valid until today or later?",
        rule="national verification law; WELMEC 11.1",
    ),
    CriterionInfo(
        criterion=Criterion.DECLARATION_PRESENT,
        title="Declaration present",
        question="For an instrument placed on the market: does an EU declaration of "
        "conformity cover it?",
        rule="MID 2014/32/EU Art. 14 and Annex XIII",
    ),
    CriterionInfo(
        criterion=Criterion.NO_OPEN_NON_COMPLIANCE,
        title="No open non-compliance",
        question="Is every non-compliance an authority found followed by a corrective action?",
        rule="MID 2014/32/EU Art. 40 and Art. 8(8); Regulation (EU) 2019/1020 Art. 16",
    ),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence:
    """One record a criterion's outcome rests on."""

    #: certificate, certificate_history, software, flag, event, declaration, instrument
    kind: str
    id: str
    at: str | None = None
    #: the ledger leaf of the signed statement behind the record (None: not a statement)
    leaf_index: int | None = None
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class CriterionResult:
    criterion: Criterion
    outcome: Outcome
    summary: str
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentInfo:
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


@dataclass(frozen=True, kw_only=True, slots=True)
class TimelineEvent:
    seq: int
    id: str
    kind: str
    occurred_at: str
    leaf_index: int
    verified_until: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentReport:
    kind: Literal["instrument"] = "instrument"
    as_of: date
    generated_at: str
    node_id: str
    instrument: InstrumentInfo
    criteria: tuple[CriterionResult, ...]
    verdict: Outcome
    #: the newest life-cycle events, oldest first (at most ``events_total``)
    events: tuple[TimelineEvent, ...]
    events_total: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CriterionCount:
    criterion: Criterion
    passed: int
    failed: int
    not_applicable: int


@dataclass(frozen=True, kw_only=True, slots=True)
class FailingInstrument:
    id: str
    serial: str
    certificate_id: str
    state: str
    failed: tuple[Criterion, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class FailingPage:
    """Failing instruments by id; ``total`` counts all, ``next_cursor`` pages on."""

    total: int
    items: tuple[FailingInstrument, ...]
    next_cursor: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class MonthCount:
    month: str  # YYYY-MM
    count: int
    #: of ``count``, those whose date lies before the report date
    overdue: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class NonComplianceMonth:
    month: str  # YYYY-MM
    found: int
    closed: int
    open: int  # open at the end of the month


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificatePoint:
    """A change of a certificate's status (its history), or its expiry."""

    at: str
    certificate_id: str
    number: str
    action: str
    status: str
    leaf_index: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateLine:
    id: str
    number: str
    model: str
    category: str
    notified_body_id: str
    status: str  # the effective status on the report date
    valid_until: date
    leaf_index: int
    instruments: int
    failing: int


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetSubject:
    """The manufacturer (a party) or the type (its certificate) a fleet report is about."""

    id: str
    name: str
    country: str | None = None
    holder_id: str | None = None
    notified_body_id: str | None = None
    number: str | None = None
    status: str | None = None
    valid_until: date | None = None
    leaf_index: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetReport:
    kind: Literal["manufacturer", "type"]
    as_of: date
    generated_at: str
    node_id: str
    subject: FleetSubject
    instruments: int
    passing: int
    verdict: Outcome
    counts: tuple[CriterionCount, ...]
    failing: FailingPage
    certificates: tuple[CertificateLine, ...]
    #: instruments in service by the month their verification runs out
    verification_due: tuple[MonthCount, ...]
    #: instruments in service that carry no verification at all
    never_verified: int
    non_compliances: tuple[NonComplianceMonth, ...]
    certificate_history: tuple[CertificatePoint, ...]


Report = InstrumentReport | FleetReport


def verdict_of(outcomes: list[Outcome]) -> Outcome:
    """Fail if any criterion fails; pass if any passes (the rest not applicable)."""
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.PASS in outcomes:
        return Outcome.PASS
    return Outcome.NOT_APPLICABLE


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def as_json(report: Report) -> dict[str, Any]:
    """The report as JSON values (the API's and the CLI's JSON form)."""
    out: dict[str, Any] = _plain(report)
    return out
