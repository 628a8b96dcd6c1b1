"""Instruments: bulk registration, look-up and search."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from metrocloud.domain.certificates import Certificate
from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from metrocloud.domain.instruments import LifeCycleState, validate_nuts, validate_serial
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import SoftwareIdentification
from metrocloud.services.certificates import to_domain
from metrocloud.services.common import (
    Actor,
    Keyset,
    Page,
    log_reads,
    require_role,
)
from metrocloud.services.node import Node
from metrocloud.services.visibility import (
    check_can_read,
    granted_ids,
    refuse_node_admin,
    visible_filter,
)
from metrocloud.store.ids import new_ids
from metrocloud.store.point import get_row
from metrocloud.store.schema import certificates, device_keys, instruments
from metrocloud.trust.keys import describe_public_key

__all__ = [
    "InstrumentDraft",
    "get_instrument",
    "instrument_out",
    "instrument_row",
    "register_instruments",
    "search_instruments",
]

_CHUNK = 2000


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentDraft:
    serial: str
    certificate_id: str
    device_keys: Sequence[str] = field(default_factory=tuple)
    region: str | None = None
    software: SoftwareIdentification | None = None


def instrument_out(row: Any, keys: Sequence[Any] = ()) -> dict[str, Any]:
    return {
        "id": row.id,
        "serial": row.serial,
        "manufacturer_id": row.manufacturer_id,
        "certificate_id": row.certificate_id,
        "category": row.category,
        "state": row.state,
        "operator_id": row.operator_id,
        "region": row.region,
        "verified_until": row.verified_until.isoformat() if row.verified_until else None,
        "software": json.loads(row.software) if row.software else None,
        "event_count": row.event_count,
        "registered_leaf": row.registered_leaf,
        "leaf_index": row.leaf_index,
        "device_keys": [
            {
                "key_id": k.key_id,
                "algorithm": k.algorithm,
                "public_key": k.public_key,
                "revoked": k.revoked_leaf is not None,
            }
            for k in keys
        ],
    }


def _check_batch(serials: list[str], key_ids: list[str]) -> None:
    seen: set[str] = set()
    for s in serials:
        if s in seen:
            raise Conflict(f"serial {s!r} appears twice in this batch")
        seen.add(s)
    seen_keys: set[str] = set()
    for k in key_ids:
        if k in seen_keys:
            raise Conflict(f"device key {k[:16]}... appears twice in this batch")
        seen_keys.add(k)


def _name_collision(conn: Connection, manufacturer: str, serials: list[str]) -> Conflict:
    """After a unique-constraint failure: which serial collided."""
    for start in range(0, len(serials), _CHUNK):
        chunk = serials[start : start + _CHUNK]
        dup = conn.execute(
            select(instruments.c.serial)
            .where(instruments.c.serial.in_(chunk), instruments.c.manufacturer_id == manufacturer)
            .limit(1)
        ).scalar_one_or_none()
        if dup is not None:
            return Conflict(
                f"serial {dup!r} is already registered by this manufacturer; "
                "nothing of this batch was registered"
            )
    return Conflict(
        "registration collides with an existing instrument; nothing of this batch was registered"
    )


def _certificates(
    conn: Connection, actor: Actor, drafts: Sequence[InstrumentDraft], today: date
) -> dict[str, Certificate]:
    certs: dict[str, Certificate] = {}
    for cid in {d.certificate_id for d in drafts}:
        row = conn.execute(select(certificates).where(certificates.c.id == cid)).first()
        if row is None:
            raise NotFound(f"certificate {cid} does not exist")
        if row.holder_id != actor.party_id:
            raise Forbidden(
                f"certificate {cid} is held by another manufacturer; only its "
                "holder registers instruments of that type",
                rule="MID 2014/32/EU Art. 8 (manufacturer obligations)",
            )
        cert = to_domain(row)
        cert.ensure_allows_registration(today)
        certs[cid] = cert
    return certs


def _item(iid: str, d: InstrumentDraft, cert: Certificate, key_ids: list[str]) -> dict[str, Any]:
    """The statement's record of one instrument (software omitted when it is the default)."""
    validate_serial(d.serial)
    item: dict[str, Any] = {"id": iid, "serial": d.serial, "certificate_id": d.certificate_id}
    if d.software is not None and d.software != cert.instrument_type.software[-1]:
        if not cert.instrument_type.approves(d.software):
            raise InvalidInput(
                f"instrument {d.serial}: software {d.software.name} {d.software.version} "
                f"({d.software.checksum[:12]}...) is not approved by certificate {cert.number}",
                rule="WELMEC 7.2 S1; MID Annex II module B point 3",
            )
        item["software"] = d.software.as_dict()
    keys = []
    for k in d.device_keys:
        _alg, key_id, spki = describe_public_key(k)
        keys.append(spki)
        key_ids.append(key_id)
    item["device_keys"] = keys
    if d.region is not None:
        item["region"] = validate_nuts(d.region)
    return item


def register_instruments(
    node: Node, actor: Actor, drafts: Sequence[InstrumentDraft], extra: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Register instruments in one transaction: all of them, or none.

    The statement lists each instrument's id, serial, certificate, device keys (base64 SPKI),
    region and, when it is not the certificate's newest approved one, its software.
    """
    require_role(actor, PartyRole.MANUFACTURER, action="register instruments")
    limit = node.settings.max_batch
    if not drafts:
        raise InvalidInput("a registration needs at least one instrument")
    if len(drafts) > limit:
        raise InvalidInput(f"a registration holds at most {limit} instruments, got {len(drafts)}")
    ids = new_ids("ins", node.country, len(drafts))
    key_ids: list[str] = []
    serials = [d.serial for d in drafts]
    try:
        with node.db.write() as conn:
            certs = _certificates(conn, actor, drafts, node.now().date())
            items = [
                _item(iid, d, certs[d.certificate_id], key_ids)
                for iid, d in zip(ids, drafts, strict=True)
            ]
            _check_batch(serials, key_ids)
            body = {"manufacturer_id": actor.party_id, "instruments": items}
            rec = node.commit(
                conn,
                [
                    node.statement(
                        kind="instruments.registered", signer=actor.party_id, body=body, extra=extra
                    )
                ],
            )
    except IntegrityError as exc:
        with node.db.read() as conn:
            raise _name_collision(conn, actor.party_id, serials) from exc
    leaf = rec.leaf_indexes[0]
    return [{"id": it["id"], "serial": it["serial"], "leaf_index": leaf} for it in items], leaf


def instrument_row(conn: Connection, instrument_id: str) -> Any:
    """The instrument's row (a point read on the driver: :mod:`metrocloud.store.point`)."""
    row = get_row(conn, instruments, instrument_id)
    if row is None:
        raise NotFound(f"instrument {instrument_id} does not exist")
    return row


def get_instrument(node: Node, actor: Actor, instrument_id: str) -> dict[str, Any]:
    with node.db.write() as conn:
        row = instrument_row(conn, instrument_id)
        by_grant = check_can_read(conn, actor, row)
        keys = conn.execute(
            select(device_keys)
            .where(device_keys.c.instrument_id == row.id)
            .order_by(device_keys.c.key_id)
        ).all()
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "instrument.read",
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
            via_grant=[row.id] if by_grant else (),
        )
    return instrument_out(row, keys)


def search_instruments(
    node: Node,
    actor: Actor,
    *,
    serial: str | None = None,
    certificate_id: str | None = None,
    manufacturer_id: str | None = None,
    operator_id: str | None = None,
    state: LifeCycleState | None = None,
    region: str | None = None,
    category: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    keyset = Keyset(instruments.c.id)
    refuse_node_admin(actor)
    i = instruments.c
    with node.db.write() as conn:
        q = keyset.apply(select(instruments).where(visible_filter(conn, actor)), limit, cursor)
        if serial:
            q = q.where(i.serial == serial)
        if certificate_id:
            q = q.where(i.certificate_id == certificate_id)
        if manufacturer_id:
            q = q.where(i.manufacturer_id == manufacturer_id)
        if operator_id:
            q = q.where(i.operator_id == operator_id)
        if state:
            q = q.where(i.state == state.value)
        if region:
            q = q.where(i.region.startswith(validate_nuts(region), autoescape=True))
        if category:
            q = q.where(i.category == category)
        page, nxt = keyset.page(conn.execute(q).all(), limit)
        by_grant = granted_ids(conn, actor, page)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "instrument.search",
            "instrument",
            [(r.id, (r.manufacturer_id, r.operator_id)) for r in page],
            via_grant=by_grant,
        )
        keys: dict[str, list[Any]] = {}
        if page:
            for k in conn.execute(
                select(device_keys)
                .where(device_keys.c.instrument_id.in_([r.id for r in page]))
                .order_by(device_keys.c.key_id)
            ):
                keys.setdefault(k.instrument_id, []).append(k)
    return Page([instrument_out(r, keys.get(r.id, ())) for r in page], nxt)
