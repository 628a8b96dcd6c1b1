"""Projection: how each kind of statement in the log changes the registry tables.

This is the only code that writes legally relevant rows. The live node calls it right after
appending a statement; ``metrocloud audit`` calls it to rebuild the registry from the log into
a scratch database and compares. Statements are projected in log order and deterministically:
everything a row holds comes from the statement or from rows projected before it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from metrocloud.domain.certificates import CertificateAction, CertificateStatus, next_status
from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.domain.instruments import EventKind, LifeCycleState, apply_event
from metrocloud.domain.parties import PartyRole
from metrocloud.store._exchange_projection import (
    encryption_key_registered,
    exchange_receipt,
    exchange_sent,
)
from metrocloud.store._grid import (
    alert_raised,
    grid_joined,
    grid_node_admitted,
    grid_node_removed,
    grid_replicated_projector,
)
from metrocloud.store._ledger_only import inspection_planned, lot_decided
from metrocloud.store.bulk import insert_rows
from metrocloud.store.schema import (
    certificate_history,
    certificates,
    declaration_instruments,
    declarations,
    device_keys,
    events,
    instruments,
    parties,
)
from metrocloud.trust.keys import describe_public_key

__all__ = ["KINDS", "device_key_id", "project", "software_text"]

Payload = Mapping[str, Any]


def device_key_id(public_key_b64: str) -> str:
    """Key id of a device key: hex SHA-256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()


def _party_admitted(conn: Connection, p: Payload, leaf: int) -> None:
    party = p["body"]["party"]
    key = party.get("public_key")
    conn.execute(
        insert(parties).values(
            id=party["id"],
            name=party["name"],
            role=party["role"],
            country=party["country"],
            nb_number=party.get("nb_number"),
            public_key=key,
            key_id=device_key_id(key) if key else None,
            admitted_at=p["issued_at"],
            leaf_index=leaf,
        )
    )


def _certificate_issued(conn: Connection, p: Payload, leaf: int) -> None:
    c = p["body"]["certificate"]
    conn.execute(
        insert(certificates).values(
            id=c["id"],
            number=c["number"],
            notified_body_id=c["notified_body_id"],
            holder_id=c["holder_id"],
            module=c["module"],
            category=c["category"],
            model=c["model"],
            accuracy_class=c["accuracy_class"],
            software=c["software"],
            rated_conditions=c.get("rated_conditions", {}),
            issued_on=date.fromisoformat(c["issued_on"]),
            valid_until=date.fromisoformat(c["valid_until"]),
            status=CertificateStatus.VALID.value,
            revision=0,
            leaf_index=leaf,
        )
    )
    _history(
        conn,
        c["id"],
        CertificateAction.ISSUE,
        status=CertificateStatus.VALID,
        revision=0,
        reason=c.get("reason", ""),
        at=p["issued_at"],
        leaf=leaf,
    )


def _history(
    conn: Connection,
    cert_id: str,
    action: CertificateAction,
    *,
    status: CertificateStatus,
    revision: int,
    reason: str,
    at: str,
    leaf: int,
) -> None:
    seq = conn.execute(
        select(func.count())
        .select_from(certificate_history)
        .where(certificate_history.c.certificate_id == cert_id)
    ).scalar_one()
    conn.execute(
        insert(certificate_history).values(
            certificate_id=cert_id,
            seq=seq,
            action=action.value,
            status=status.value,
            revision=revision,
            reason=reason,
            at=at,
            leaf_index=leaf,
        )
    )


def _certificate_row(conn: Connection, cert_id: str) -> Any:
    row = conn.execute(select(certificates).where(certificates.c.id == cert_id)).first()
    if row is None:
        raise NotFound(f"certificate {cert_id} does not exist")
    return row


_REVISABLE = ("model", "accuracy_class", "software", "rated_conditions", "valid_until")


def _certificate_changed(action: CertificateAction) -> Callable[[Connection, Payload, int], None]:
    def apply(conn: Connection, p: Payload, leaf: int) -> None:
        body = p["body"]
        row = _certificate_row(conn, body["certificate_id"])
        status = next_status(CertificateStatus(row.status), action)
        values: dict[str, Any] = {"status": status.value, "leaf_index": leaf}
        revision = row.revision
        if action is CertificateAction.REVISE:
            revision += 1
            changes = body.get("changes", {})
            unknown = set(changes) - set(_REVISABLE)
            if unknown:
                raise InvalidInput(f"cannot revise {sorted(unknown)} of a certificate")
            for name in _REVISABLE:
                if name in changes:
                    values[name] = (
                        date.fromisoformat(changes[name])
                        if name == "valid_until"
                        else changes[name]
                    )
            values["revision"] = revision
        conn.execute(update(certificates).where(certificates.c.id == row.id).values(**values))
        _history(
            conn,
            row.id,
            action,
            status=status,
            revision=revision,
            reason=body.get("reason", ""),
            at=p["issued_at"],
            leaf=leaf,
        )

    return apply


_INSTRUMENT_COLUMNS = (
    "id",
    "serial",
    "manufacturer_id",
    "certificate_id",
    "category",
    "state",
    "operator_id",
    "region",
    "verified_until",
    "software",
    "event_count",
    "registered_leaf",
    "leaf_index",
)
_KEY_COLUMNS = ("key_id", "instrument_id", "algorithm", "public_key", "revoked_leaf")


def software_text(software: Mapping[str, Any] | None) -> str | None:
    """The stored form of a software identification: canonical JSON text."""
    if software is None:
        return None
    return json.dumps(software, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _instruments_registered(conn: Connection, p: Payload, leaf: int) -> None:
    body = p["body"]
    manufacturer = body["manufacturer_id"]
    certs: dict[str, tuple[str, str | None]] = {}  # id -> (category, default software text)
    registered = LifeCycleState.REGISTERED.value
    rows = []
    keys = []
    for item in body["instruments"]:
        cid = item["certificate_id"]
        if cid not in certs:
            row = _certificate_row(conn, cid)
            certs[cid] = (row.category, software_text(row.software[-1]))
        category, default_sw = certs[cid]
        sw = item.get("software")
        rows.append(
            (
                item["id"],
                item["serial"],
                manufacturer,
                cid,
                category,
                registered,
                None,
                item.get("region"),
                None,
                software_text(sw) if sw is not None else default_sw,
                0,
                leaf,
                leaf,
            )
        )
        for k in item.get("device_keys", ()):
            alg, key_id, spki = describe_public_key(k)
            keys.append((key_id, item["id"], alg.value, spki, None))
    insert_rows(conn, instruments, _INSTRUMENT_COLUMNS, rows)
    insert_rows(conn, device_keys, _KEY_COLUMNS, keys)


def _conformity_declared(conn: Connection, p: Payload, leaf: int) -> None:
    d = p["body"]["declaration"]
    conn.execute(
        insert(declarations).values(
            id=d["id"],
            certificate_id=d["certificate_id"],
            manufacturer_id=d["manufacturer_id"],
            module=d["module"],
            instrument_ids=d["instrument_ids"],
            declared_on=date.fromisoformat(d["declared_on"]),
            document_sha256=d.get("document_sha256"),
            leaf_index=leaf,
        )
    )
    insert_rows(
        conn,
        declaration_instruments,
        ("instrument_id", "declaration_id"),
        [(iid, d["id"]) for iid in d["instrument_ids"]],
    )


def _instrument_event(conn: Connection, p: Payload, leaf: int) -> None:
    e = p["body"]["event"]
    inst = conn.execute(select(instruments).where(instruments.c.id == e["instrument_id"])).first()
    if inst is None:
        raise NotFound(f"instrument {e['instrument_id']} does not exist")
    role = conn.execute(select(parties.c.role).where(parties.c.id == p["signer"])).scalar_one()
    kind = EventKind(e["kind"])
    state = apply_event(LifeCycleState(inst.state), kind, PartyRole(role))
    details = e.get("details", {})
    values: dict[str, Any] = {
        "state": state.value,
        "leaf_index": leaf,
        "event_count": inst.event_count + 1,
    }
    if kind is EventKind.PUT_INTO_SERVICE:
        values["operator_id"] = p["signer"]
    if "region" in details and kind in (EventKind.PUT_INTO_SERVICE, EventKind.RELOCATED):
        values["region"] = details["region"]
    if kind is EventKind.VERIFIED:
        values["verified_until"] = date.fromisoformat(details["verified_until"])
    if kind in (
        EventKind.VERIFICATION_FAILED,
        EventKind.SEAL_BROKEN,
        EventKind.REPAIRED,
        EventKind.TAMPER_DETECTED,
        EventKind.SOFTWARE_UPDATED,
    ):
        values["verified_until"] = None  # the verification no longer holds
    if kind is EventKind.SOFTWARE_UPDATED:
        values["software"] = software_text(details["software"])
    conn.execute(update(instruments).where(instruments.c.id == inst.id).values(**values))
    conn.execute(
        insert(events).values(
            id=e["id"],
            instrument_id=inst.id,
            seq=inst.event_count,
            kind=kind.value,
            occurred_at=e["occurred_at"],
            recorded_by=p["signer"],
            details=details,
            state_after=state.value,
            leaf_index=leaf,
        )
    )


KINDS: dict[str, Callable[[Connection, Payload, int], None]] = {
    "party.admitted": _party_admitted,
    "certificate.issued": _certificate_issued,
    "certificate.revised": _certificate_changed(CertificateAction.REVISE),
    "certificate.suspended": _certificate_changed(CertificateAction.SUSPEND),
    "certificate.reinstated": _certificate_changed(CertificateAction.REINSTATE),
    "certificate.withdrawn": _certificate_changed(CertificateAction.WITHDRAW),
    "instruments.registered": _instruments_registered,
    "conformity.declared": _conformity_declared,
    "instrument.event": _instrument_event,
    # ledger-only facts (no registry row): services/surveillance
    "lot.decided": lot_decided,
    "inspection.planned": inspection_planned,
    # confidential exchange (docs/exchange.md): a party's X25519 key; ledger-only facts
    "party.encryption_key": encryption_key_registered,
    "exchange.sent": exchange_sent,
    "exchange.receipt": exchange_receipt,
    # the Legal Metrology Grid (docs/grid.md): node identities, alerts; grid.replicated below
    "grid.joined": grid_joined,
    "grid.node_admitted": grid_node_admitted,
    "grid.node_removed": grid_node_removed,
    "alert.raised": alert_raised,
}
#: another node's statement, checked against its admitted key and projected through KINDS
KINDS["grid.replicated"] = grid_replicated_projector(KINDS)


def project(conn: Connection, payload: Payload, leaf_index: int) -> None:
    """Apply one statement's payload to the registry tables."""
    handler = KINDS.get(payload["kind"])
    if handler is None:
        raise InvalidInput(f"unknown statement kind {payload['kind']!r}; known: {sorted(KINDS)}")
    handler(conn, payload, leaf_index)
