"""The checklist of remote verification, over the data of a whole lot loaded at once.

:func:`load_lot` reads what the checks need for every instrument of a lot in a few batched
queries (instruments, certificates and their history, device keys, the relevant life-cycle
events, the intake's flags, the uploaded device event logs); the lake's reference errors
are read once for the lot by the caller. Each ``check_*`` function is pure: it looks at one
instrument's :class:`Subject` and returns one numbered :class:`Check`.

Only facts known at the evaluation time ``at`` count: events that occurred, flags raised and
device records uploaded by then, and the certificate's status then. So the node can repeat
an evaluation for a given ``at`` and arrive at the same verdict (docs/verification.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, select

from metrocloud.device.eventlog import DeviceEventKind, EventRecord, parse_record, verify_chain
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.domain.instruments import EventKind
from metrocloud.services._verification_result import CHECK_NAMES, Check, Finding, Outcome
from metrocloud.services.event_logs import load_event_logs
from metrocloud.services.monitoring import DailyError, in_service_mpe
from metrocloud.store.schema import (
    certificate_history,
    certificates,
    device_keys,
    events,
    instruments,
    intake_flags,
)
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "MIN_REFERENCE_SPANS",
    "RECENT",
    "Subject",
    "check_certificate",
    "check_event_log",
    "check_reference",
    "check_software",
    "examined_records",
    "last_verification",
    "load_lot",
]

#: fewer reference spans than this in the window: check 4 is not applicable
MIN_REFERENCE_SPANS: Final = 2
#: check 4 judges the error of the spans within this stretch before the newest one
RECENT: Final = timedelta(days=3)
_CHUNK: Final = 500
_VERIFICATIONS: Final = (EventKind.VERIFIED.value, EventKind.VERIFICATION_FAILED.value)
_SECURITY: Final = (EventKind.SEAL_BROKEN.value, EventKind.TAMPER_DETECTED.value)
_DEVICE_SECURITY: Final = (DeviceEventKind.SEAL_BROKEN, DeviceEventKind.TAMPER_DETECTED)
_UNAPPROVED: Final = "unapproved-software"
_PROTECTION = "MID 2014/32/EU Annex I point 8 (protection against corruption)"


@dataclass(frozen=True, kw_only=True, slots=True)
class Subject:
    """Everything the checks look at for one instrument, as known at the evaluation time."""

    row: Any
    cert: Any
    #: the certificate's recorded status at the evaluation time (before expiry by date)
    cert_status: str
    keys: tuple[Any, ...]
    #: verification, seal and tamper events that occurred by then, in seq order
    events: tuple[Any, ...]
    #: the intake's unapproved-software flags raised by then
    flags: tuple[Any, ...]
    #: the stored device event log rows uploaded by then, in seq order
    log: tuple[Any, ...]


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def load_lot(conn: Connection, ids: Sequence[str], at: str) -> dict[str, Subject]:
    """The subjects of ``ids`` at time ``at`` (RFC 3339 text, the node's format), in a few
    batched queries per 500 instruments; :class:`NotFound` names the first unknown id."""
    rows: dict[str, Any] = {}
    keys: dict[str, list[Any]] = {}
    evts: dict[str, list[Any]] = {}
    flags: dict[str, list[Any]] = {}
    for chunk in _chunks(ids):
        for r in conn.execute(select(instruments).where(instruments.c.id.in_(chunk))):
            rows[r.id] = r
        for k in conn.execute(select(device_keys).where(device_keys.c.instrument_id.in_(chunk))):
            keys.setdefault(k.instrument_id, []).append(k)
        e = events.c
        for ev in conn.execute(
            select(e.id, e.instrument_id, e.seq, e.kind, e.occurred_at, e.details)
            .where(
                e.instrument_id.in_(chunk),
                e.kind.in_(_VERIFICATIONS + _SECURITY),
                e.occurred_at <= at,
            )
            .order_by(e.instrument_id, e.seq)
        ):
            evts.setdefault(ev.instrument_id, []).append(ev)
        f = intake_flags.c
        for fl in conn.execute(
            select(intake_flags)
            .where(f.instrument_id.in_(chunk), f.kind == _UNAPPROVED, f.at <= at)
            .order_by(f.id)
        ):
            flags.setdefault(fl.instrument_id, []).append(fl)
    missing = next((i for i in ids if i not in rows), None)
    if missing is not None:
        raise NotFound(f"instrument {missing} does not exist")
    cert_ids = sorted({r.certificate_id for r in rows.values()})
    certs = {
        c.id: c for c in conn.execute(select(certificates).where(certificates.c.id.in_(cert_ids)))
    }
    status: dict[str, str] = {}
    h = certificate_history.c
    for hist in conn.execute(
        select(h.certificate_id, h.status, h.at)
        .where(h.certificate_id.in_(cert_ids), h.at <= at)
        .order_by(h.certificate_id, h.seq)
    ):
        status[hist.certificate_id] = hist.status  # the last one by then wins
    logs = load_event_logs(conn, ids, uploaded_until=at)
    return {
        i: Subject(
            row=rows[i],
            cert=certs[rows[i].certificate_id],
            cert_status=status.get(rows[i].certificate_id, certs[rows[i].certificate_id].status),
            keys=tuple(keys.get(i, ())),
            events=tuple(evts.get(i, ())),
            flags=tuple(flags.get(i, ())),
            log=tuple(logs.get(i, ())),
        )
        for i in ids
    }


def last_verification(s: Subject) -> Any | None:
    """The newest verified / verification_failed event by the evaluation time, if any."""
    return next((e for e in reversed(s.events) if e.kind in _VERIFICATIONS), None)


def _check(number: int, findings: Sequence[Finding], evidence: Mapping[str, Any]) -> Check:
    return Check(
        number=number,
        name=CHECK_NAMES[number - 1],
        outcome=Outcome.FAIL if findings else Outcome.PASS,
        evidence=dict(evidence),
        findings=tuple(findings),
    )


# -- (1) the certificate ---------------------------------------------------------------------


def check_certificate(s: Subject, at: datetime) -> Check:
    """(1): the instrument's EU-type examination certificate is valid at the time."""
    cert = s.cert
    status = effective_status(s.cert_status, cert.valid_until, at.date())
    evidence = {
        "certificate_id": cert.id,
        "number": cert.number,
        "status": status.value,
        "valid_until": cert.valid_until.isoformat(),
        "revision": cert.revision,
    }
    findings = []
    if status is not CertificateStatus.VALID:
        findings.append(
            Finding(
                code="certificate-not-valid",
                message=f"certificate {cert.number} is {status.value} on {at.date()} "
                f"(valid until {cert.valid_until}); expected valid",
                rule="MID 2014/32/EU Annex II module B points 6 and 7 (validity, withdrawal)",
            )
        )
    return _check(1, findings, evidence)


# -- (2) the software --------------------------------------------------------------------------


def check_software(s: Subject, since: str | None) -> Check:
    """(2): the installed software identification is approved by the certificate, and the
    intake reported no unapproved software since the last verification."""
    installed = json.loads(s.row.software) if s.row.software else None
    approved = installed is not None and installed in list(s.cert.software)
    flags = [f for f in s.flags if since is None or f.at > since]
    findings = []
    if installed is None:
        findings.append(
            Finding(
                code="software-unknown",
                message=f"no software identification is recorded for {s.row.id}",
                rule="WELMEC 7.2 S1 (software identification)",
            )
        )
    elif not approved:
        findings.append(
            Finding(
                code="software-not-approved",
                message=f"installed software {installed.get('name')} {installed.get('version')} "
                f"({str(installed.get('checksum'))[:16]}...) is not approved by certificate "
                f"{s.cert.number} (approved: "
                f"{', '.join(sw['name'] + ' ' + sw['version'] for sw in s.cert.software)})",
                rule="WELMEC 7.2 S1; MID 2014/32/EU Annex II module B point 3",
            )
        )
    if flags:
        findings.append(
            Finding(
                code="unapproved-software-reported",
                message=f"the intake received {len(flags)} batch(es) reporting unapproved "
                f"software since {since or 'registration'}, first at {flags[0].at}: "
                f"{flags[0].detail}",
                rule="WELMEC 7.2 S1; MID 2014/32/EU Annex I point 8.3",
            )
        )
    evidence = {
        "installed": installed,
        "approved_by_certificate": approved,
        "unapproved_software_flags": len(flags),
        "since": since,
    }
    return _check(2, findings, evidence)


# -- (3) the event log -------------------------------------------------------------------------


def examined_records(last: Any | None) -> int | None:
    """The device-log length the previous verification examined (from its result)."""
    if last is None:
        return None
    try:
        evidence = last.details["result"]["checks"][2]["evidence"]
        value = evidence["device_log"]["records"]
    except (KeyError, IndexError, TypeError):
        return None
    return value if type(value) is int and value >= 0 else None


def _device_log(
    s: Subject, since: str | None, from_seq: int | None
) -> tuple[list[Finding], dict[str, Any]]:
    if not s.log:
        if not s.keys:
            return [], {"present": False, "applicable": False, "why": "no device key registered"}
        return [
            Finding(
                code="event-log-missing",
                message=f"no device event log of {s.row.id} was uploaded to the node "
                "(PUT /api/v1/instruments/{id}/event-log); its integrity cannot be checked",
                rule="WELMEC 7.2 P7/U7 (event logger); L3/L4",
            )
        ], {"present": False, "applicable": True}
    findings: list[Finding] = []
    records: list[EventRecord] = []
    for r in s.log:
        try:
            records.append(parse_record(r.line.encode("utf-8")))
        except InvalidInput as exc:
            findings.append(
                Finding(
                    code="event-log-broken",
                    message=f"stored record seq {r.seq} is malformed ({exc.message}): the "
                    "stored log was altered after its upload",
                    rule="WELMEC 7.2 L3/L4 (integrity of stored data)",
                )
            )
            break
    key_row = next((k for k in s.keys if records and k.key_id == records[0].key), None)
    valid = records
    head = None
    if not findings and key_row is None:
        findings.append(
            Finding(
                code="event-log-broken",
                message=f"the event log is signed with key {records[0].key if records else '-'}, "
                f"which is not a device key of {s.row.id}",
                rule="WELMEC 7.2 L3/L4 (authenticity of stored data)",
            )
        )
        valid = []
    elif not findings and key_row is not None:
        check = verify_chain(records, PublicKey.from_spki_b64(key_row.public_key))
        head = check.head
        if not check.ok:
            findings.append(
                Finding(
                    code="event-log-broken",
                    message=f"event log broken at seq {check.broken_seq}: {check.reason}",
                    rule="WELMEC 7.2 L3/L4 (integrity and authenticity of stored data)",
                )
            )
            valid = records[: check.valid_records]
    # the records since the last verification (by the count it examined, else by time)
    if from_seq is not None:
        recent = [r for r in valid if r.seq > from_seq]
    else:
        recent = [r for r in valid if since is None or r.at > since]
    kinds: dict[str, int] = {}
    for r in recent:
        kinds[r.kind.value] = kinds.get(r.kind.value, 0) + 1
    for kind in _DEVICE_SECURITY:
        hits = [r for r in recent if r.kind is kind]
        if hits:
            findings.append(
                Finding(
                    code=f"device-{kind.value.replace('_', '-')}",
                    message=f"the device event log records {kind.value} {len(hits)} time(s) "
                    f"since the last verification, first at seq {hits[0].seq} (device time "
                    f"{hits[0].at})",
                    rule=_PROTECTION,
                )
            )
    evidence = {
        "present": True,
        "applicable": True,
        "records": len(s.log),
        "verified_records": len(valid),
        "head": head,
        "key_id": key_row.key_id if key_row is not None else None,
        "examined_from_seq": (from_seq or 0) + 1 if from_seq is not None else None,
        "recent_kinds": dict(sorted(kinds.items())),
    }
    return findings, evidence


def check_event_log(s: Subject, since: str | None, from_seq: int | None) -> Check:
    """(3): the uploaded device event log is present, its chain and signatures are intact,
    and neither it nor the life-cycle events show a broken seal or tampering since the last
    verification."""
    findings, device = _device_log(s, since, from_seq)
    recent = [
        e for e in s.events if e.kind in _SECURITY and (since is None or e.occurred_at > since)
    ]
    for kind in _SECURITY:
        hits = [e for e in recent if e.kind == kind]
        if hits:
            findings.append(
                Finding(
                    code=kind.replace("_", "-"),
                    message=f"life-cycle event {kind} recorded {len(hits)} time(s) since "
                    f"{since or 'registration'}, first {hits[0].id} at {hits[0].occurred_at}",
                    rule=_PROTECTION,
                )
            )
    evidence = {
        "since": since,
        "device_log": device,
        "life_cycle": {k: sum(1 for e in recent if e.kind == k) for k in _SECURITY},
    }
    return _check(3, findings, evidence)


# -- (4) reference readings --------------------------------------------------------------------


def _weighted(errors: Sequence[DailyError]) -> tuple[float, float]:
    """(consumption-weighted error in percent, reference increment) of ``errors``."""
    total = sum(e.reference_increment for e in errors)
    return sum(e.error_percent * e.reference_increment for e in errors) / total, total


def check_reference(
    s: Subject,
    errors: Sequence[DailyError],
    country: str,
    window: tuple[datetime, datetime],
) -> Check:
    """(4): where the lake holds reference readings of the instrument in the window, the
    register's current error against the reference lies within the in-service MPE of its
    category, accuracy class and member state.

    "Current": the consumption-weighted error of the newest spans, those stamped (at their
    middle) within :data:`RECENT` of the newest one, at least :data:`MIN_REFERENCE_SPANS`
    of them; so an instrument that drifted past its MPE during the window fails although its
    mean over the window may not. Fewer than :data:`MIN_REFERENCE_SPANS` spans in the window:
    not applicable. The evidence says how recent the data is and holds the error over the
    whole window and its worst span."""
    base: dict[str, Any] = {
        "window": [utc_timestamp(window[0]), utc_timestamp(window[1])],
        "reference_spans": len(errors),
    }
    if len(errors) < MIN_REFERENCE_SPANS:
        base["why"] = f"fewer than {MIN_REFERENCE_SPANS} reference spans in the window"
        return Check(number=4, name=CHECK_NAMES[3], outcome=Outcome.NOT_APPLICABLE, evidence=base)
    try:
        limit = float(in_service_mpe(s.row.category, s.cert.accuracy_class, country))
    except InvalidInput as exc:
        base["why"] = f"no percentage MPE for {s.row.category} class {s.cert.accuracy_class}: {exc}"
        return Check(number=4, name=CHECK_NAMES[3], outcome=Outcome.NOT_APPLICABLE, evidence=base)
    newest = errors[-1].t
    recent = [e for e in errors if e.t >= newest - RECENT]
    if len(recent) < MIN_REFERENCE_SPANS:
        recent = list(errors[-MIN_REFERENCE_SPANS:])
    error, increment = _weighted(recent)
    overall, total = _weighted(errors)
    worst = max(errors, key=lambda e: abs(e.error_percent))
    evidence = {
        **base,
        "error_percent": round(error, 6),
        "recent_spans": len(recent),
        "recent_from": utc_timestamp(recent[0].t),
        "newest_span": utc_timestamp(newest),
        "recent_reference_increment": round(increment, 6),
        "window_error_percent": round(overall, 6),
        "worst_span_error_percent": round(worst.error_percent, 6),
        "reference_increment": round(total, 6),
        "mpe_percent": limit,
    }
    findings = []
    if abs(error) > limit:
        cat = InstrumentCategory(s.row.category)
        findings.append(
            Finding(
                code="reference-beyond-mpe",
                message=f"the register errs by {error:+.3f} % against the reference over its "
                f"last {len(recent)} spans (from {recent[0].t.date()}; {overall:+.3f} % over "
                f"the {len(errors)} spans since {window[0].date()}), beyond the in-service MPE "
                f"of +-{limit:g} % for {cat.value} class {s.cert.accuracy_class} in {country}",
                rule=f"{cat.legal_basis}: MPE x in-service factor of {country} (docs/mpe.md)",
            )
        )
    return _check(4, findings, evidence)
