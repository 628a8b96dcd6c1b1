"""What the registry and the log hold about one instrument, for its forensic timeline and
evidence bundle: the ledger entries about it (with their leaf indexes), the timeline entries
of its life cycle, its certificate, its declarations, the intake's findings and its access
log. Runs inside the caller's transaction; reads only indexed rows of the instrument.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from metrocloud.domain.instruments import EventKind
from metrocloud.ledger import TransparencyLog
from metrocloud.store.schema import (
    access_log,
    certificate_history,
    declaration_instruments,
    declarations,
    events,
    intake_flags,
    parties,
    quarantine,
)
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "RANK",
    "VERIFICATION_KINDS",
    "Entry",
    "LedgerPart",
    "Window",
    "collect",
    "instant",
    "instrument_summary",
]

#: event kinds that are verification results: their entries are of type ``verification``
VERIFICATION_KINDS = frozenset({EventKind.VERIFIED.value, EventKind.VERIFICATION_FAILED.value})
#: order of entry types at the same instant
RANK = {
    t: n
    for n, t in enumerate(
        (
            "registered",
            "certificate",
            "declaration",
            "event",
            "verification",
            "flag",
            "quarantine",
            "measurements",
            "access",
        )
    )
}


def instant(value: str | datetime) -> datetime:
    """A stored time (RFC 3339 text of any precision, ``Z`` or offset) as aware UTC,
    truncated to the millisecond like every time metrocloud writes."""
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    t = t.astimezone(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """A half-open time window ``[start, end)``; None is open."""

    start: datetime | None = None
    end: datetime | None = None

    def holds(self, t: datetime) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)

    def to_json(self) -> dict[str, str | None]:
        return {
            "start": None if self.start is None else utc_timestamp(self.start),
            "end": None if self.end is None else utc_timestamp(self.end),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One entry of a timeline."""

    at: datetime
    type: str
    details: Mapping[str, Any]
    leaf_index: int | None = None
    ref: str | None = None

    def sort_key(self) -> tuple[datetime, int, int, str]:
        return (
            self.at,
            RANK[self.type],
            -1 if self.leaf_index is None else self.leaf_index,
            self.ref or "",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "at": utc_timestamp(self.at),
            "type": self.type,
            "leaf_index": self.leaf_index,
            "ref": self.ref,
            "details": dict(self.details),
        }


@dataclass(kw_only=True)
class LedgerPart:
    """The ledger entries about an instrument (leaf index -> exact entry bytes) and the
    registry's timeline entries, all below ``tree_size``."""

    tree_size: int
    entries: dict[int, bytes] = field(default_factory=dict)
    timeline: list[Entry] = field(default_factory=list)


def instrument_summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "serial": row.serial,
        "category": row.category,
        "certificate_id": row.certificate_id,
        "manufacturer_id": row.manufacturer_id,
        "operator_id": row.operator_id,
        "state": row.state,
        "region": row.region,
        "verified_until": row.verified_until.isoformat() if row.verified_until else None,
    }


def _payload(entry: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(entry)["payload"]
    return payload


def _entries(
    conn: Connection, log: TransparencyLog, leaves: Iterable[int], into: dict[int, bytes]
) -> None:
    for leaf in sorted(set(leaves) - set(into)):
        into[leaf] = log.entry(conn, leaf)


def collect(
    conn: Connection, log: TransparencyLog, row: Any, tree_size: int, window: Window
) -> LedgerPart:
    """The instrument's statements below ``tree_size`` and its timeline entries in ``window``
    (every statement about it, whatever the window: the bundle proves the whole life cycle).
    """
    part = LedgerPart(tree_size=tree_size)
    below = tree_size

    def keep(leaf: int) -> bool:
        return leaf < below

    event_rows = [
        r
        for r in conn.execute(
            select(events).where(events.c.instrument_id == row.id).order_by(events.c.seq)
        ).all()
        if keep(r.leaf_index)
    ]
    decl_rows = [
        r
        for r in conn.execute(
            select(declarations)
            .join(
                declaration_instruments,
                declaration_instruments.c.declaration_id == declarations.c.id,
            )
            .where(declaration_instruments.c.instrument_id == row.id)
            .order_by(declarations.c.leaf_index)
        ).all()
        if keep(r.leaf_index)
    ]
    history = [
        r
        for r in conn.execute(
            select(certificate_history)
            .where(certificate_history.c.certificate_id == row.certificate_id)
            .order_by(certificate_history.c.seq)
        ).all()
        if keep(r.leaf_index)
    ]
    leaves = [r.leaf_index for r in (*event_rows, *decl_rows, *history)]
    if keep(row.registered_leaf):
        leaves.append(row.registered_leaf)
    _entries(conn, log, leaves, part.entries)
    signers = {_payload(e)["signer"] for e in part.entries.values()}
    admissions = conn.execute(
        select(parties.c.leaf_index).where(parties.c.id.in_(sorted(signers)))
    ).scalars()
    _entries(conn, log, [leaf for leaf in admissions if keep(leaf)], part.entries)

    out = part.timeline
    if row.registered_leaf in part.entries:
        p = _payload(part.entries[row.registered_leaf])
        out.append(
            Entry(
                at=instant(p["issued_at"]),
                type="registered",
                leaf_index=row.registered_leaf,
                ref=row.id,
                details={
                    "serial": row.serial,
                    "certificate_id": row.certificate_id,
                    "manufacturer_id": p["body"]["manufacturer_id"],
                    "signer": p["signer"],
                },
            )
        )
    for h in history:
        out.append(
            Entry(
                at=instant(h.at),
                type="certificate",
                leaf_index=h.leaf_index,
                ref=h.certificate_id,
                details={
                    "action": h.action,
                    "status": h.status,
                    "revision": h.revision,
                    "reason": h.reason,
                    "signer": _payload(part.entries[h.leaf_index])["signer"],
                },
            )
        )
    for d in decl_rows:
        p = _payload(part.entries[d.leaf_index])
        out.append(
            Entry(
                at=instant(p["issued_at"]),
                type="declaration",
                leaf_index=d.leaf_index,
                ref=d.id,
                details={
                    "module": d.module,
                    "declared_on": d.declared_on.isoformat(),
                    "certificate_id": d.certificate_id,
                    "document_sha256": d.document_sha256,
                    "signer": p["signer"],
                },
            )
        )
    for e in event_rows:
        verification = e.kind in VERIFICATION_KINDS
        details: dict[str, Any] = {
            "kind": e.kind,
            "seq": e.seq,
            "recorded_by": e.recorded_by,
            "state_after": e.state_after,
            "details": e.details,
        }
        if verification:
            details["result"] = "passed" if e.kind == EventKind.VERIFIED.value else "failed"
        out.append(
            Entry(
                at=instant(e.occurred_at),
                type="verification" if verification else "event",
                leaf_index=e.leaf_index,
                ref=e.id,
                details=details,
            )
        )
    out.extend(_intake(conn, row.id))
    owners = {row.manufacturer_id, row.operator_id} | {
        e.recorded_by for e in event_rows if e.kind == EventKind.PUT_INTO_SERVICE.value
    }
    out.extend(
        _access(conn, row.id, sorted(o for o in owners if o), [d.id for d in decl_rows], window)
    )
    part.timeline = [e for e in out if window.holds(e.at)]
    return part


def _intake(conn: Connection, instrument_id: str) -> list[Entry]:
    out = [
        Entry(
            at=instant(f.at),
            type="flag",
            ref=str(f.id),
            details={"kind": f.kind, "detail": f.detail},
        )
        for f in conn.execute(
            select(intake_flags)
            .where(intake_flags.c.instrument_id == instrument_id)
            .order_by(intake_flags.c.id)
        ).all()
    ]
    for q in conn.execute(
        select(quarantine)
        .where(quarantine.c.instrument_id == instrument_id)
        .order_by(quarantine.c.id)
    ).all():
        out.append(
            Entry(
                at=instant(q.received_at),
                type="quarantine",
                ref=str(q.id),
                details={
                    "reason": q.reason,
                    "detail": q.detail,
                    "transport": q.transport,
                    "key_id": q.key_id,
                    "counter": q.counter,
                    "wire_sha256": hashlib.sha256(q.wire).hexdigest(),
                },
            )
        )
    return out


def _access(
    conn: Connection,
    instrument_id: str,
    owners: list[str],
    declaration_ids: list[str],
    window: Window,
) -> list[Entry]:
    """Reads of the instrument (and of its declarations) by other parties, one entry per
    read: the rows of the read in each owner's log are merged."""
    a = access_log.c
    about = and_(a.resource_type == "instrument", a.resource_id == instrument_id)
    if declaration_ids:
        about = or_(
            about, and_(a.resource_type == "declaration", a.resource_id.in_(declaration_ids))
        )
    q = select(access_log).where(a.owner_id.in_(owners), about)
    w = window.to_json()
    if w["start"] is not None:
        q = q.where(a.at >= w["start"])
    if w["end"] is not None:
        q = q.where(a.at < w["end"])
    merged: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in conn.execute(q.order_by(a.id)).all():
        key = (
            r.at,
            r.reader_id,
            r.reader_role,
            r.action,
            r.resource_type,
            r.resource_id,
            bool(r.via_grant),
        )
        counts = merged.setdefault(key, {})
        counts[r.owner_id] = counts.get(r.owner_id, 0) + 1
    return [
        Entry(
            at=instant(key[0]),
            type="access",
            details={
                "reader_id": key[1],
                "reader_role": key[2],
                "action": key[3],
                "resource_type": key[4],
                "resource_id": key[5],
                "via_grant": key[6],
                "owners": sorted(counts),
                "reads": max(counts.values()),
            },
        )
        for key, counts in merged.items()
    ]
