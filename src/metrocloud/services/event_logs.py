"""Devices' event logs at the node: upload (append-only, verified) and batched reads.

An instrument's manufacturer or operator (a head-end system) uploads the device's event log
(:mod:`metrocloud.device.eventlog`: counted, hash-chained records signed by the device key)
as the canonical JSON lines the device wrote. The node keeps one log per instrument, one row
per record (``device_event_logs``), and checks every upload in this order:

1. every line is a well-formed record in exactly the canonical form the device writes
   (else :class:`InvalidInput`, 422; nothing is stored or quarantined: a client error);
2. the upload continues the stored log: it starts at seq 1 (the whole log) or at most one
   past the stored end (a delta), never leaving a gap (else :class:`InvalidInput`);
3. records the node already holds are repeated byte for byte. A different record at a
   stored seq that the device key signed is a *rewritten history* (a reset device, or a
   compromised key): :class:`EventLogRewritten`, 409. A different record whose signature
   does not verify is an altered record: :class:`EventLogBroken`, 400;
4. the records are signed with a device key registered for the instrument and not revoked;
5. the whole chain (the stored prefix and the upload) verifies with
   :func:`~metrocloud.device.eventlog.verify_chain`: counting, hash chain, key and
   signature of every record (else :class:`EventLogBroken` naming the seq and the check).

A refused upload changes nothing that was stored: the earlier upload stays intact. Uploads
refused by checks 3 to 5 are evidence of tampering: they are kept in the ``quarantine``
table (reason ``event-log-rewritten`` or ``event-log-broken``, transport ``http``, the seq
in ``counter``, the uploaded bytes in ``wire``), where monitoring reports them as
``intake_quarantine`` findings. Re-sending what is stored changes nothing (idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from metrocloud.device.eventlog import (
    LOG_FORMAT,
    EventRecord,
    parse_record,
    verify_chain,
)
from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.services.common import Actor, require_role
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.store.bulk import insert_rows
from metrocloud.store.schema import device_event_logs, device_keys, quarantine
from metrocloud.trust.keys import PublicKey

__all__ = [
    "MAX_UPLOAD_RECORDS",
    "UPLOADERS",
    "EventLogBroken",
    "EventLogRewritten",
    "check_may_upload",
    "load_event_logs",
    "parse_upload",
    "upload_event_log",
]

#: most records in one upload (the reference device's default capacity); longer logs go up
#: in deltas
MAX_UPLOAD_RECORDS: Final = 10_000
#: roles that may upload an instrument's event log (its manufacturer or its operator)
UPLOADERS: Final = (PartyRole.MANUFACTURER, PartyRole.OPERATOR)
_INTEGRITY = "WELMEC 7.2 L3/L4 (integrity and authenticity of stored data), P7/U7 (event logger)"
_CHUNK: Final = 500
_COLUMNS: Final = (
    "instrument_id",
    "seq",
    "kind",
    "at",
    "key_id",
    "hash",
    "line",
    "uploaded_at",
    "uploaded_by",
)


class EventLogBroken(VerificationError):
    """An uploaded record fails the chain, key or signature check (400, quarantined)."""

    code = "event-log-broken"

    def __init__(self, message: str, *, seq: int, key_id: str | None) -> None:
        super().__init__(message, rule=_INTEGRITY)
        self.seq = seq
        self.key_id = key_id


class EventLogRewritten(Conflict):
    """An upload that replaces records the node holds (409, quarantined)."""

    code = "event-log-rewritten"

    def __init__(self, message: str, *, seq: int, key_id: str | None) -> None:
        super().__init__(message, rule=_INTEGRITY + "; the event log is append-only")
        self.seq = seq
        self.key_id = key_id


def _relationship(actor: Actor, row: Any) -> None:
    if actor.role is PartyRole.MANUFACTURER and row.manufacturer_id == actor.party_id:
        return
    if actor.role is PartyRole.OPERATOR and row.operator_id == actor.party_id:
        return
    raise Forbidden(
        f"{actor.party_id} may not upload the event log of instrument {row.id}: only its "
        "manufacturer and its operator may",
        rule="metrocloud role rules (docs/verification.md#event-log-upload)",
    )


def check_may_upload(node: Node, actor: Actor, instrument_id: str) -> None:
    """Authorization that does not depend on the request body (the API guard)."""
    require_role(actor, *UPLOADERS, action="upload device event logs")
    with node.db.read() as conn:
        _relationship(actor, instrument_row(conn, instrument_id))


def parse_upload(data: bytes) -> list[EventRecord]:
    """The records of an upload: one canonical line each, in order (:class:`InvalidInput`
    names the first bad line)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise InvalidInput("the upload holds no event record: send one record a line")
    if len(lines) > MAX_UPLOAD_RECORDS:
        raise InvalidInput(
            f"an upload holds at most {MAX_UPLOAD_RECORDS} records, got {len(lines)}; send a "
            "longer log in parts (each part continues the stored log)"
        )
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = parse_record(line)
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc.message}", rule=exc.rule) from None
        if record.to_line() != line + b"\n":
            raise InvalidInput(
                f"line {number} (seq {record.seq}) is not in the canonical form the device "
                "writes (RFC 8785 JSON, one record a line); send the log file unchanged",
                rule=LOG_FORMAT,
            )
        records.append(record)
    return records


def _device_key(conn: Connection, instrument_id: str, record: EventRecord) -> PublicKey:
    row = conn.execute(
        select(device_keys).where(
            device_keys.c.instrument_id == instrument_id, device_keys.c.key_id == record.key
        )
    ).first()
    if row is None:
        raise EventLogBroken(
            f"record seq {record.seq} is signed with key {record.key}, which is not a device "
            f"key registered for instrument {instrument_id} (check: key)",
            seq=record.seq,
            key_id=record.key,
        )
    if row.revoked_leaf is not None:
        raise EventLogBroken(
            f"record seq {record.seq} is signed with device key {record.key}, which was "
            f"revoked (ledger leaf {row.revoked_leaf}) (check: key)",
            seq=record.seq,
            key_id=record.key,
        )
    return PublicKey.from_spki_b64(row.public_key)


def _append(
    conn: Connection, row: Any, records: Sequence[EventRecord], actor: Actor, now: str
) -> dict[str, Any]:
    stored = conn.execute(
        select(device_event_logs.c.seq, device_event_logs.c.hash, device_event_logs.c.line)
        .where(device_event_logs.c.instrument_id == row.id)
        .order_by(device_event_logs.c.seq)
    ).all()
    held = len(stored)
    first = records[0].seq
    if first > held + 1:
        raise InvalidInput(
            f"the node holds records 1 to {held} of the event log of {row.id}; an upload "
            f"starting at seq {first} would leave a gap: send the records from seq "
            f"{held + 1} (or the whole log)",
            rule=LOG_FORMAT,
        )
    key = _device_key(conn, row.id, records[0])
    # (3): records the node holds come back byte for byte
    for record in records:
        if record.seq > held:
            break
        mine = stored[record.seq - 1]
        if record.hash == mine.hash:
            continue
        try:
            key.verify(record.signature, record.signed_bytes())
        except VerificationError:
            raise EventLogBroken(
                f"record seq {record.seq} differs from the record the node holds and its "
                f"signature does not verify under device key {key.key_id} (the record was "
                "altered) (check: signature)",
                seq=record.seq,
                key_id=record.key,
            ) from None
        raise EventLogRewritten(
            f"record seq {record.seq} differs from the record uploaded before (hash "
            f"{record.hash}, the node holds {mine.hash}) although the device key signed it: "
            "the history was rewritten (a reset device or a compromised key). The event log "
            f"is append-only: the upload is refused and the stored {held} records stay",
            seq=record.seq,
            key_id=record.key,
        )
    # (4), (5): the stored prefix and the upload form one verified chain
    chain = [parse_record(r.line.encode("utf-8")) for r in stored[: first - 1]]
    chain += list(records)
    check = verify_chain(chain, key)
    if not check.ok:
        raise EventLogBroken(
            f"event log of {row.id} broken at seq {check.broken_seq}: {check.reason} "
            f"(check: {_check_name(check.reason or '')}); the {check.valid_records} records "
            "before it verify",
            seq=check.broken_seq or 0,
            key_id=records[0].key,
        )
    new = [r for r in records if r.seq > held]
    insert_rows(
        conn,
        device_event_logs,
        _COLUMNS,
        [
            (
                row.id,
                r.seq,
                r.kind.value,
                r.at,
                r.key,
                r.hash,
                r.to_line()[:-1].decode("utf-8"),
                now,
                actor.party_id,
            )
            for r in new
        ],
    )
    return {
        "instrument_id": row.id,
        "records": max(held, len(chain)),
        "appended": len(new),
        "head": check.head if len(chain) >= held else stored[-1].hash,
        "key_id": key.key_id,
    }


def _check_name(reason: str) -> str:
    if reason.startswith("found seq"):
        return "counting"
    if reason.startswith("prev"):
        return "hash chain"
    if reason.startswith("signed with key"):
        return "key"
    return "signature"


def upload_event_log(node: Node, actor: Actor, instrument_id: str, data: bytes) -> dict[str, Any]:
    """Append the uploaded records to the instrument's stored event log (module docstring:
    the checks). Returns ``instrument_id``, ``records`` (stored now), ``appended``,
    ``head`` (hash of the last record) and ``key_id``."""
    require_role(actor, *UPLOADERS, action="upload device event logs")
    records = parse_upload(data)
    now = node.timestamp()
    refused: EventLogBroken | EventLogRewritten | None = None
    try:
        with node.db.write() as conn:
            row = instrument_row(conn, instrument_id)
            _relationship(actor, row)
            try:
                out = _append(conn, row, records, actor, now)
            except (EventLogBroken, EventLogRewritten) as exc:
                # nothing of the upload was written: keep it, with its reason, as evidence
                refused = exc
                conn.execute(
                    insert(quarantine).values(
                        received_at=now,
                        transport="http",
                        reason=exc.code,
                        detail=exc.message,
                        instrument_id=row.id,
                        key_id=exc.key_id,
                        counter=exc.seq,
                        wire=data,
                    )
                )
    except IntegrityError:
        raise Conflict(
            f"another upload of the event log of {instrument_id} was stored at the same time; "
            "send this one again"
        ) from None
    if refused is not None:
        raise refused
    return out


def load_event_logs(
    conn: Connection, instrument_ids: Iterable[str], *, uploaded_until: str | None = None
) -> dict[str, list[Any]]:
    """The stored records (rows of ``device_event_logs``, in seq order) of each instrument,
    in a few batched queries; with ``uploaded_until``, only what had arrived by then."""
    ids = list(dict.fromkeys(instrument_ids))
    out: dict[str, list[Any]] = {}
    t = device_event_logs.c
    for start in range(0, len(ids), _CHUNK):
        q = select(device_event_logs).where(t.instrument_id.in_(ids[start : start + _CHUNK]))
        if uploaded_until is not None:
            q = q.where(t.uploaded_at <= uploaded_until)
        for r in conn.execute(q.order_by(t.instrument_id, t.seq)):
            out.setdefault(r.instrument_id, []).append(r)
    return out
