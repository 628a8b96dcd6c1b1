"""The five criteria for one instrument, each with its evidence (a handful of point reads).

The rules here and the set-based ones of :mod:`.fleet` are the same rules written twice:
a test checks that the fleet counts equal these outcomes summed instrument by instrument.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, select

from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.instruments import EventKind, LifeCycleState
from metrocloud.services._compliance.model import (
    Criterion,
    CriterionResult,
    Evidence,
    InstrumentInfo,
    Outcome,
    TimelineEvent,
)
from metrocloud.store.projection import software_text
from metrocloud.store.schema import (
    certificate_history,
    certificates,
    declaration_instruments,
    declarations,
    events,
    intake_flags,
    parties,
)

__all__ = ["TIMELINE_EVENTS", "evaluate", "timeline"]

#: the newest life-cycle events an instrument report carries for its timeline
TIMELINE_EVENTS = 200
#: the most flags / non-compliances named as evidence of one criterion
_EVIDENCE_CAP = 20

_E = EventKind
#: events that void a verification (the projection sets verified_until to NULL)
_VOIDING = (
    _E.VERIFICATION_FAILED,
    _E.SEAL_BROKEN,
    _E.REPAIRED,
    _E.TAMPER_DETECTED,
    _E.SOFTWARE_UPDATED,
)
_RELEVANT = (
    _E.VERIFIED,
    *_VOIDING,
    _E.NON_COMPLIANCE_FOUND,
    _E.CORRECTIVE_ACTION,
)
UNAPPROVED_FLAG = "unapproved-software"


def _event_evidence(e: Any, detail: str = "") -> Evidence:
    return Evidence(
        kind="event", id=e.id, at=e.occurred_at, leaf_index=e.leaf_index, detail=detail or e.kind
    )


def _certificate(cert: Any, history: Sequence[Any], today: date) -> CriterionResult:
    status = effective_status(cert.status, cert.valid_until, today)
    evidence = [
        Evidence(
            kind="certificate",
            id=cert.id,
            at=cert.valid_until.isoformat(),
            leaf_index=cert.leaf_index,
            detail=f"{cert.number}: {status}, valid until {cert.valid_until.isoformat()}",
        )
    ]
    if status is CertificateStatus.VALID:
        return CriterionResult(
            criterion=Criterion.CERTIFICATE_VALID,
            outcome=Outcome.PASS,
            summary=f"certificate {cert.number} is valid until {cert.valid_until.isoformat()}",
            evidence=tuple(evidence),
        )
    if status is CertificateStatus.EXPIRED and cert.status != CertificateStatus.EXPIRED.value:
        summary = f"certificate {cert.number} expired after {cert.valid_until.isoformat()}"
    else:
        change = next((h for h in reversed(history) if h.status == status.value), None)
        summary = f"certificate {cert.number} is {status}"
        if change is not None:
            summary += f" since {change.at}"
            evidence.append(
                Evidence(
                    kind="certificate_history",
                    id=f"{cert.id}#{change.seq}",
                    at=change.at,
                    leaf_index=change.leaf_index,
                    detail=f"{change.action}: {change.reason}".rstrip(": "),
                )
            )
    return CriterionResult(
        criterion=Criterion.CERTIFICATE_VALID,
        outcome=Outcome.FAIL,
        summary=summary,
        evidence=tuple(evidence),
    )


def _describe(software: dict[str, Any]) -> str:
    return f"{software.get('name')} {software.get('version')}"


def _software(
    row: Any, cert: Any, evs: Sequence[Any], flags: Sequence[Any], open_flags: int
) -> CriterionResult:
    installed = json.loads(row.software) if row.software else None
    approved = {software_text(s) for s in cert.software}
    updates = [e for e in evs if e.kind == _E.SOFTWARE_UPDATED.value]
    evidence: list[Evidence] = []
    if installed is not None:
        source = updates[-1] if updates else None
        evidence.append(
            Evidence(
                kind="software",
                id=_describe(installed),
                at=source.occurred_at if source else None,
                leaf_index=source.leaf_index if source else row.registered_leaf,
                detail=f"{installed.get('algorithm')}:{installed.get('checksum')}",
            )
        )
    evidence += [
        Evidence(kind="flag", id=str(f.id), at=f.at, detail=f.detail)
        for f in flags[-_EVIDENCE_CAP:]
    ]
    problems = []
    if installed is not None and row.software not in approved:
        problems.append(
            f"installed software {_describe(installed)} is not approved by certificate "
            f"{cert.number}"
        )
    if open_flags:
        problems.append(
            f"the intake flagged unapproved software {open_flags} time(s) since the last "
            "software update"
        )
    if problems:
        outcome, summary = Outcome.FAIL, "; ".join(problems)
    elif installed is None:
        outcome, summary = Outcome.NOT_APPLICABLE, "no software identification recorded"
    else:
        outcome = Outcome.PASS
        summary = f"installed software {_describe(installed)} is approved by {cert.number}"
    return CriterionResult(
        criterion=Criterion.SOFTWARE_APPROVED,
        outcome=outcome,
        summary=summary,
        evidence=tuple(evidence),
    )


def _verification(row: Any, evs: Sequence[Any], today: date) -> CriterionResult:
    last_verified = next((e for e in reversed(evs) if e.kind == _E.VERIFIED.value), None)
    last_failed = next((e for e in reversed(evs) if e.kind == _E.VERIFICATION_FAILED.value), None)
    voiding = [e for e in evs if e.kind in {k.value for k in _VOIDING}]
    last_void = voiding[-1] if voiding else None
    evidence = [
        _event_evidence(
            e,
            f"verified until {e.details.get('verified_until')}"
            if e.kind == _E.VERIFIED.value
            else e.kind,
        )
        for e in sorted({x.id: x for x in (last_verified, last_failed) if x}.values(), key=_seq)
    ]
    voids_last = last_void is not None and (
        last_verified is None or last_void.seq > last_verified.seq
    )
    if last_void is not None and voids_last and last_void is not last_failed:
        evidence.append(_event_evidence(last_void, f"{last_void.kind} voids the verification"))
    vu = row.verified_until
    if row.state != LifeCycleState.IN_SERVICE.value:
        return CriterionResult(
            criterion=Criterion.VERIFICATION_CURRENT,
            outcome=Outcome.NOT_APPLICABLE,
            summary=f"not in service ({row.state}): verification applies to instruments in use",
            evidence=tuple(evidence),
        )
    if vu is not None and vu >= today:
        outcome, summary = Outcome.PASS, f"verified until {vu.isoformat()}"
    elif vu is not None:
        outcome, summary = Outcome.FAIL, f"verification expired after {vu.isoformat()}"
    elif last_void is not None and voids_last:
        outcome = Outcome.FAIL
        summary = f"no valid verification: {last_void.kind} on {last_void.occurred_at}"
    else:
        outcome, summary = Outcome.FAIL, "never verified"
    return CriterionResult(
        criterion=Criterion.VERIFICATION_CURRENT,
        outcome=outcome,
        summary=summary,
        evidence=tuple(evidence),
    )


def _seq(e: Any) -> int:
    return int(e.seq)


def _declaration(row: Any, decls: Sequence[Any]) -> CriterionResult:
    evidence = tuple(
        Evidence(
            kind="declaration",
            id=d.id,
            at=d.declared_on.isoformat(),
            leaf_index=d.leaf_index,
            detail=f"module {d.module}",
        )
        for d in decls
    )
    if decls:
        first = decls[0]
        outcome = Outcome.PASS
        summary = f"declared in {first.id} on {first.declared_on.isoformat()}"
    elif row.state == LifeCycleState.REGISTERED.value:
        outcome = Outcome.NOT_APPLICABLE
        summary = "not yet placed on the market: no declaration is due"
    else:
        outcome = Outcome.FAIL
        summary = f"no declaration of conformity covers this instrument ({row.state})"
    return CriterionResult(
        criterion=Criterion.DECLARATION_PRESENT, outcome=outcome, summary=summary, evidence=evidence
    )


def _non_compliance(evs: Sequence[Any]) -> CriterionResult:
    found = [e for e in evs if e.kind == _E.NON_COMPLIANCE_FOUND.value]
    actions = [e for e in evs if e.kind == _E.CORRECTIVE_ACTION.value]
    last_action = actions[-1] if actions else None
    closed_before = last_action.seq if last_action else -1
    still_open = [e for e in found if e.seq > closed_before]
    evidence = [
        _event_evidence(e, _note("non-compliance", e.details)) for e in still_open[:_EVIDENCE_CAP]
    ]
    if last_action is not None:
        evidence.append(
            _event_evidence(last_action, _note("corrective action", last_action.details))
        )
    if still_open:
        outcome = Outcome.FAIL
        summary = (
            f"{len(still_open)} open non-compliance(s), the first found {still_open[0].occurred_at}"
        )
    elif found:
        outcome = Outcome.PASS
        summary = f"{len(found)} non-compliance(s), all followed by a corrective action"
    else:
        outcome, summary = Outcome.PASS, "no non-compliance found"
    return CriterionResult(
        criterion=Criterion.NO_OPEN_NON_COMPLIANCE,
        outcome=outcome,
        summary=summary,
        evidence=tuple(evidence),
    )


def _note(what: str, details: Any) -> str:
    if isinstance(details, dict):
        for key in ("reason", "note", "finding", "action", "description"):
            if isinstance(details.get(key), str):
                return f"{what}: {details[key]}"
    return what


def evaluate(
    conn: Connection, row: Any, today: date
) -> tuple[InstrumentInfo, tuple[CriterionResult, ...]]:
    """The instrument's facts and its five criteria on ``today``."""
    cert = conn.execute(select(certificates).where(certificates.c.id == row.certificate_id)).one()
    maker = conn.execute(
        select(parties.c.name).where(parties.c.id == row.manufacturer_id)
    ).scalar_one()
    history = conn.execute(
        select(certificate_history)
        .where(certificate_history.c.certificate_id == cert.id)
        .order_by(certificate_history.c.seq)
    ).all()
    evs = conn.execute(
        select(events)
        .where(
            events.c.instrument_id == row.id,
            events.c.kind.in_([k.value for k in _RELEVANT]),
        )
        .order_by(events.c.seq)
    ).all()
    updates = [e.occurred_at for e in evs if e.kind == _E.SOFTWARE_UPDATED.value]
    f = intake_flags.c
    flag_filter = [f.instrument_id == row.id, f.kind == UNAPPROVED_FLAG]
    if updates:
        flag_filter.append(f.at > max(updates))
    open_flags = conn.execute(
        select(func.count()).select_from(intake_flags).where(*flag_filter)
    ).scalar_one()
    flags = list(
        reversed(
            conn.execute(
                select(intake_flags).where(*flag_filter).order_by(f.id.desc()).limit(_EVIDENCE_CAP)
            ).all()
        )
    )
    decls = conn.execute(
        select(declarations)
        .join(
            declaration_instruments, declaration_instruments.c.declaration_id == declarations.c.id
        )
        .where(declaration_instruments.c.instrument_id == row.id)
        .order_by(declarations.c.declared_on, declarations.c.id)
    ).all()
    info = InstrumentInfo(
        id=row.id,
        serial=row.serial,
        manufacturer_id=row.manufacturer_id,
        manufacturer_name=maker,
        certificate_id=cert.id,
        certificate_number=cert.number,
        model=cert.model,
        category=row.category,
        state=row.state,
        operator_id=row.operator_id,
        region=row.region,
        verified_until=row.verified_until,
        software=json.loads(row.software) if row.software else None,
        registered_leaf=row.registered_leaf,
        leaf_index=row.leaf_index,
    )
    criteria = (
        _certificate(cert, history, today),
        _software(row, cert, evs, flags, open_flags),
        _verification(row, evs, today),
        _declaration(row, decls),
        _non_compliance(evs),
    )
    return info, criteria


def timeline(conn: Connection, instrument_id: str) -> tuple[tuple[TimelineEvent, ...], int]:
    """The newest :data:`TIMELINE_EVENTS` life-cycle events (oldest first) and how many."""
    total = conn.execute(
        select(func.count()).select_from(events).where(events.c.instrument_id == instrument_id)
    ).scalar_one()
    rows = conn.execute(
        select(events)
        .where(events.c.instrument_id == instrument_id)
        .order_by(events.c.seq.desc())
        .limit(TIMELINE_EVENTS)
    ).all()
    out = tuple(
        TimelineEvent(
            seq=e.seq,
            id=e.id,
            kind=e.kind,
            occurred_at=e.occurred_at,
            leaf_index=e.leaf_index,
            verified_until=(
                str(e.details.get("verified_until"))
                if e.kind == _E.VERIFIED.value and isinstance(e.details, dict)
                else None
            ),
        )
        for e in reversed(rows)
    )
    return out, int(total)
