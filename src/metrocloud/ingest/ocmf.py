"""Imported OCMF: the signed readings of a registered EV charging meter, into the intake log.

A charge point operator (or the meter's manufacturer) imports the OCMF records of charging
sessions, as bare records or in a Transparenzsoftware XML container. Each record passes
these checks in this order; the first that fails names the rejection reason, and the record
goes to the quarantine with it (the same reasons as the batch intake, docs/ingest.md):

1. ``malformed``: the value is not an OCMF record (another format, a parse error);
2. ``unknown-instrument``: its meter serial (``MS``) names no EV charging instrument
   (``DE-EV``) registered on this node;
3. ``unknown-key`` / ``revoked-key``: the public key the container carries is not one of the
   instrument's device keys, or it was revoked; without a carried key the instrument's keys
   in force are tried, and it has none on the record's curve;
4. ``bad-signature``: no such key verifies the signature over the payload section;
5. ``duplicate`` (not a rejection): the same record (its exact bytes) was imported before;
   it is acknowledged again and stored once;
6. ``invalid-record``: signed, but it breaks a rule of a single record (meter status, error
   flags, pagination format, reading codes: :func:`metrocloud.formats.ocmf.verify_ocmf`);
7. ``unapproved-software``: the instrument's certificate is not valid today, or the meter
   firmware the record names (``MF``) is not the version of a software identification the
   certificate approves (the instrument is flagged);
8. ``implausible-time``: a reading has no valid time (``TM``) or lies ahead of the node's
   clock by more than the allowed skew. Old records are not refused: sessions are imported
   after the fact, from receipts.

Across the records of one import that were accepted, per instrument: pagination continuity,
transactions from ``B`` to an end code and one meter serial
(:func:`metrocloud.formats.ocmf.check_group`). A break is no reason to refuse a record that
is itself proven: the records are accepted and the instrument is flagged ``ocmf-sequence``
with the finding, as the batch intake flags a counter gap.

Accepted records are stored in ``intake_batches`` like batches, with the record's exact
bytes as the wire and their SHA-256 as the digest, so the lake flusher moves their readings
into the lake exactly once (:mod:`metrocloud.ingest.flusher`). OCMF has no per-key counter
that the node could chain (``PG`` counts transaction and fiscal pages separately and
restarts with the meter), so the node numbers a key's records -1, -2, ...: they never meet
a device's own batch counters, which start at 1.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, func, select

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.errors import InvalidInput
from metrocloud.formats._ocmf_crypto import CURVES, decode_binary_text, parse_public_key
from metrocloud.formats._ocmf_rules import check_group, parse_time
from metrocloud.formats.ocmf import OcmfDocument, effective_readings, parse_ocmf, verify_ocmf
from metrocloud.formats.transparenz import ContainerValue
from metrocloud.ingest.intake import (  # the intake log's row layout, shared with batches
    _FLAG_COLUMNS,
    _MAX_DETAIL,
    _QUARANTINE_COLUMNS,
    TURNS,
    Intake,
    Outcome,
    store_accepted,
)
from metrocloud.ingest.rounds import WIRES, join_round
from metrocloud.store.bulk import insert_rows
from metrocloud.store.schema import (
    certificates,
    device_keys,
    instruments,
    intake_batches,
    intake_flags,
    quarantine,
)
from metrocloud.store.turns import write_turn

__all__ = ["OCMF_PREFIX", "OcmfImport", "import_values", "reading_status"]

#: how a stored OCMF record starts (an MCB1 batch starts with ``MCB1.``)
OCMF_PREFIX = b"OCMF|"
_EV = InstrumentCategory.DE_EV.value
#: the curve of a registered device key algorithm (Ed25519 is no OCMF algorithm)
_KEY_CURVE = {"ecdsa-p256": "secp256r1"}


def reading_status(status: str | None) -> int:
    """The lake's integer status of an OCMF meter status (``ST``): 0 for ``G`` (good), the
    letter's code point otherwise (``M``, manipulated, is 77), -1 when there is none."""
    if not status:
        return -1
    return 0 if status == "G" else ord(status[0])


@dataclass(frozen=True, slots=True)
class _Key:
    key_id: str
    der: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class _Meter:
    id: str
    certificate_id: str
    status: CertificateStatus
    approved_versions: frozenset[str]
    keys: tuple[_Key, ...]


class _Reject(Exception):
    def __init__(self, reason: str, detail: str, meter: _Meter | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail[:_MAX_DETAIL]
        self.meter = meter


@dataclass
class _Accepted:
    index: int
    doc: OcmfDocument
    meter: _Meter
    key: _Key
    wire: bytes
    digest: str
    times: list[int]
    #: its number in the intake log (negative, per key), set when it is stored
    counter: int = 0


@dataclass
class OcmfImport:
    """The outcome of an import: one per value, in order, after they are durable."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(o.status == "accepted" for o in self.outcomes)

    @property
    def duplicate(self) -> int:
        return sum(o.status == "duplicate" for o in self.outcomes)

    @property
    def rejected(self) -> int:
        return sum(o.status == "rejected" for o in self.outcomes)


def import_values(intake: Intake, values: Sequence[ContainerValue], transport: str) -> OcmfImport:
    """Check ``values`` (the records of one file or request) and store them in one write
    transaction: accepted records into the intake log, the rest into the quarantine."""
    now = intake.clock()
    received_at = now.isoformat().replace("+00:00", "Z")
    with write_turn(intake.db), intake.db.write() as conn, TURNS.writing():
        meters: dict[str, _Meter | None] = {}
        #: per value: its final outcome, or the accepted record it is (or repeats)
        slots: list[Outcome | tuple[bool, _Accepted]] = []
        accepted: dict[tuple[str, str], _Accepted] = {}
        rejected: list[tuple[object, ...]] = []
        flags: list[tuple[object, ...]] = []
        for value in values:
            wire = (value.signed_data or "").strip().encode("utf-8")
            try:
                acc = _check(conn, value, wire, meters, now, intake.limits.max_skew_ms)
            except _Reject as rej:
                meter_id = rej.meter.id if rej.meter else None
                stored = wire or (value.signed_data or "").encode("utf-8", "replace") or b"-"
                rejected.append(
                    (received_at, transport, rej.reason, rej.detail, meter_id, None, None, stored)
                )
                if rej.reason == "unapproved-software" and meter_id is not None:
                    flags.append((meter_id, "unapproved-software", rej.detail, received_at))
                slots.append(Outcome("rejected", rej.reason, rej.detail, meter_id))
                continue
            # (5) the same record imported before, or earlier in this import
            ident = (acc.key.key_id, acc.digest)
            earlier = _stored_counter(conn, *ident)
            if earlier is not None:
                slots.append(
                    Outcome("duplicate", None, None, acc.meter.id, earlier, len(acc.times))
                )
            elif ident in accepted:
                slots.append((True, accepted[ident]))
            else:
                accepted[ident] = acc
                slots.append((False, acc))
        batches, wires = _number(conn, list(accepted.values()), received_at, transport)
        flagged = _sequence_flags(list(accepted.values()), received_at)
        flags += flagged.rows
        done: list[Outcome] = []
        for slot in slots:
            if isinstance(slot, Outcome):
                done.append(slot)
                continue
            repeat, a = slot
            done.append(
                Outcome(
                    "duplicate" if repeat else "accepted",
                    None,
                    None,
                    a.meter.id,
                    a.counter,
                    len(a.times),
                    () if repeat else flagged.of.get(a.meter.id, ()),
                )
            )
        if batches:
            store_accepted(conn, batches, join_round(wires), WIRES)
        insert_rows(conn, quarantine, _QUARANTINE_COLUMNS, rejected)
        insert_rows(conn, intake_flags, _FLAG_COLUMNS, flags)
    for outcome in done:
        intake.counts.add(outcome)
    return OcmfImport(done)


# --- the checks of one record -----------------------------------------------------------------


def _check(
    conn: Connection,
    value: ContainerValue,
    wire: bytes,
    meters: dict[str, _Meter | None],
    now: datetime,
    max_skew_ms: int,
) -> _Accepted:
    now_ms = int(now.timestamp() * 1000)
    # (1) an OCMF record at all
    fmt = (value.data_format or "").strip()
    if value.problem is not None:
        raise _Reject("malformed", value.problem)
    if fmt and fmt.upper() != "OCMF":
        raise _Reject("malformed", f"not OCMF: the value's format is {fmt!r}")
    if not wire.startswith(OCMF_PREFIX):
        raise _Reject("malformed", 'not OCMF: the signed data does not start with "OCMF|"')
    try:
        doc = parse_ocmf(wire)
    except InvalidInput as exc:
        raise _Reject("malformed", exc.message) from None
    # (2) the registered EV charging instrument its meter serial names
    serial = doc.meter_serial
    if not serial:
        raise _Reject("unknown-instrument", "the record names no meter serial (MS)")
    if serial not in meters:
        meters[serial] = _meter(conn, serial, now.date())
    meter = meters[serial]
    if meter is None:
        raise _Reject(
            "unknown-instrument",
            f"meter serial {serial!r} (MS) names no EV charging instrument ({_EV}) "
            "registered on this node",
        )
    # (3) a registered device key in force, on the record's curve
    verdict_unkeyed = verify_ocmf(doc, None)
    curve = _curve(verdict_unkeyed.algorithm)
    candidates = _candidates(value, meter, curve)
    # (4) the signature over the payload section
    verdicts = [(k, verify_ocmf(doc, k.der)) for k in candidates]
    holding = next(((k, v) for k, v in verdicts if v.signature_valid), None)
    if holding is None:
        ids = ", ".join(k.key_id[:16] for k in candidates)
        raise _Reject(
            "bad-signature",
            f"{verdict_unkeyed.algorithm or 'the SA'} signature over the payload section "
            f"({len(doc.payload)} bytes) does not verify with the device key(s) {ids} of "
            f"instrument {meter.id}",
            meter,
        )
    key, verdict = holding
    times = [parse_time(r.time) for r in effective_readings(doc)]
    acc = _Accepted(
        value.index,
        doc,
        meter,
        key,
        wire,
        hashlib.sha256(wire).hexdigest(),
        [int(t.timestamp() * 1000) if t else -1 for t in times],
    )
    # (6) the rules of one record
    if verdict.status != "valid":
        raise _Reject("invalid-record", verdict.reason or verdict.status, meter)
    # (7) software approved by a valid certificate
    if meter.status is not CertificateStatus.VALID:
        raise _Reject(
            "unapproved-software",
            f"certificate {meter.certificate_id} of {meter.id} is {meter.status.value}: it "
            "approves no software",
            meter,
        )
    firmware = (doc.meter_firmware or "").strip()
    if firmware and firmware not in meter.approved_versions:
        approved = ", ".join(sorted(meter.approved_versions)) or "none"
        raise _Reject(
            "unapproved-software",
            f"meter firmware {firmware!r} (MF) is not the version of a software identification "
            f"approved by certificate {meter.certificate_id} (approved: {approved})",
            meter,
        )
    # (8) times
    if not times or any(t is None for t in times):
        raise _Reject("implausible-time", "a reading has no valid time (TM)", meter)
    latest = max(acc.times)
    if latest > now_ms + max_skew_ms:
        raise _Reject(
            "implausible-time",
            f"reading at {_iso_ms(latest)} is ahead of the node's clock {_iso_ms(now_ms)}",
            meter,
        )
    return acc


def _curve(algorithm: str | None) -> str | None:
    parts = (algorithm or "").split("-")
    names = {c.name for c in CURVES}
    return parts[1] if len(parts) == 3 and parts[1] in names else None


def _candidates(value: ContainerValue, meter: _Meter, curve: str | None) -> list[_Key]:
    """The registered keys to verify with: the carried key if it is one (in force), else all
    keys in force on the record's curve."""
    live = [k for k in meter.keys if not k.revoked]
    if value.public_key and value.public_key.strip() and curve is not None:
        hint = next(c for c in CURVES if c.name == curve)
        try:
            carried = parse_public_key(
                decode_binary_text(value.public_key, value.key_encoding, "public key"), hint
            )
        except InvalidInput as exc:
            raise _Reject("unknown-key", f"the carried public key: {exc.message}", meter) from None
        for k in meter.keys:
            try:
                if parse_public_key(k.der, hint).point == carried.point:
                    if k.revoked:
                        raise _Reject(
                            "revoked-key",
                            f"the carried public key is device key {k.key_id} of {meter.id}, "
                            "which was revoked",
                            meter,
                        )
                    return [k]
            except InvalidInput:
                continue
        raise _Reject(
            "unknown-key",
            f"the carried public key is not a device key of instrument {meter.id}",
            meter,
        )
    fitting = [k for k in live if curve is not None and _fits(k, curve)]
    if not fitting:
        held = "no key in force" if not live else f"{len(live)} key(s) in force, none on it"
        raise _Reject(
            "unknown-key",
            f"instrument {meter.id} has {held} for the record's curve {curve or '(SA unknown)'}",
            meter,
        )
    return fitting


def _fits(key: _Key, curve: str) -> bool:
    hint = next(c for c in CURVES if c.name == curve)
    try:
        parse_public_key(key.der, hint)
    except InvalidInput:
        return False
    return True


# --- the registry -------------------------------------------------------------------------------


def _meter(conn: Connection, serial: str, today: date) -> _Meter | None:
    i, c = instruments.c, certificates.c
    row = conn.execute(
        select(i.id, i.certificate_id, c.status, c.valid_until, c.software)
        .join(certificates, c.id == i.certificate_id)
        .where(i.serial == serial, i.category == _EV)
        .order_by(i.id)
        .limit(2)
    ).all()
    if len(row) != 1:
        return None  # none, or ambiguous between manufacturers: the record does not say
    r = row[0]
    keys = tuple(
        _Key(k.key_id, base64.b64decode(k.public_key), k.revoked_leaf is not None)
        for k in conn.execute(
            select(device_keys.c.key_id, device_keys.c.public_key, device_keys.c.revoked_leaf)
            .where(device_keys.c.instrument_id == r.id)
            .order_by(device_keys.c.key_id)
        )
    )
    status = effective_status(r.status, r.valid_until, today)
    versions = frozenset(str(s.get("version")) for s in (r.software or []))
    return _Meter(r.id, r.certificate_id, status, versions, keys)


def _stored_counter(conn: Connection, key_id: str, digest: str) -> int | None:
    return conn.execute(
        select(intake_batches.c.counter).where(
            intake_batches.c.key_id == key_id,
            intake_batches.c.counter < 0,
            intake_batches.c.digest == digest,
        )
    ).scalar()


def _number(
    conn: Connection, accepted: Sequence[_Accepted], received_at: str, transport: str
) -> tuple[list[tuple[object, ...]], list[bytes]]:
    """The intake-log rows of ``accepted`` and their records' exact bytes, numbered per key
    downward from the key's lowest."""
    lowest: dict[str, int] = {}
    rows: list[tuple[object, ...]] = []
    wires: list[bytes] = []
    for a in accepted:
        k = a.key.key_id
        if k not in lowest:
            low = conn.execute(
                select(func.min(intake_batches.c.counter)).where(
                    intake_batches.c.key_id == k, intake_batches.c.counter < 0
                )
            ).scalar()
            lowest[k] = int(low) if low is not None else 0
        lowest[k] -= 1
        a.counter = lowest[k]
        rows.append(
            (
                k,
                lowest[k],
                a.digest,
                a.meter.id,
                _EV,
                len(a.times),
                min(a.times),
                max(a.times),
                received_at,
                transport,
            )
        )
        wires.append(a.wire)
    return rows, wires


@dataclass
class _Flags:
    rows: list[tuple[object, ...]] = field(default_factory=list)
    of: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _sequence_flags(accepted: Sequence[_Accepted], received_at: str) -> _Flags:
    """Breaks across the accepted records of one instrument: flagged, not refused."""
    out = _Flags()
    by_meter: dict[str, list[_Accepted]] = defaultdict(list)
    for a in accepted:
        by_meter[a.meter.id].append(a)
    for meter_id, group in by_meter.items():
        found = check_group([(a.index, a.doc) for a in group])
        texts = sorted({str(f) for fs in found.values() for f in fs})
        if texts:
            detail = "; ".join(texts)[:_MAX_DETAIL]
            out.rows.append((meter_id, "ocmf-sequence", detail, received_at))
            out.of[meter_id] = ("ocmf-sequence",)
    return out


def _iso_ms(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
