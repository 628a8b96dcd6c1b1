"""Projectors of the grid's statements: the pinned anchor, admitted nodes, replicated facts,
alerts (docs/grid.md).

* ``grid.joined`` - the node pins the grid's trust anchor and records its own admission;
* ``grid.node_admitted`` / ``grid.node_removed`` - a peer enters or leaves the peer list;
* ``grid.replicated`` - a statement of another node, applied here: the origin's signed
  statement is embedded whole and checked again on every replay (``metrocloud audit``)
  against the origin's admitted key, then projected like a local one (parties,
  certificates) or onto the alert board (alerts, non-compliance notices);
* ``alert.raised`` - a market-surveillance alert by an authority, or a split view a node
  found by witnessing.

Every check reads only the statement and rows projected before it, so a replay reaches the
same verdicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from metrocloud.domain.errors import Conflict, RuleViolation, VerificationError
from metrocloud.store.ids import parse_id
from metrocloud.store.schema import (
    alerts,
    certificates,
    grid_anchors,
    grid_nodes,
    grid_replicated,
    parties,
)
from metrocloud.trust.admission import SignedAdmission
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import SignedStatement

__all__ = [
    "ALERT_KINDS",
    "REPLICATED_PARTY_ROLES",
    "alert_raised",
    "grid_joined",
    "grid_node_admitted",
    "grid_node_removed",
    "grid_replicated_projector",
    "inner_digest",
]

Payload = Mapping[str, Any]
Projector = Callable[[Connection, Payload, int], None]

_RULE = "metrocloud grid replication v1 (docs/grid.md#replication)"
#: parties known across the grid: who certifies, who places on the EU market, who surveys
REPLICATED_PARTY_ROLES = frozenset({"manufacturer", "notified_body", "authority"})
ALERT_KINDS = frozenset({"market_surveillance", "split_view"})
_CERTIFICATE_KINDS = frozenset(
    {
        "certificate.issued",
        "certificate.revised",
        "certificate.suspended",
        "certificate.reinstated",
        "certificate.withdrawn",
    }
)


def inner_digest(statement: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a statement envelope's canonical bytes: its identity across nodes."""
    return hashlib.sha256(canonical_json(statement)).hexdigest()


def _self_row(conn: Connection) -> Any:
    return conn.execute(select(grid_nodes).where(grid_nodes.c.is_self.is_(True))).first()


def _anchor(conn: Connection) -> PublicKey:
    row = conn.execute(select(grid_anchors.c.public_key)).first()
    if row is None:
        raise RuleViolation("no grid anchor is pinned ('metrocloud grid join')", rule=_RULE)
    return PublicKey.from_spki_b64(row.public_key)


def _by_self(conn: Connection, p: Payload, leaf: int) -> Any:
    me = _self_row(conn)
    if me is None or p["signer"] != me.node_id:
        raise RuleViolation(
            f"{p['kind']} at leaf {leaf} is signed by {p['signer']}; only the node itself "
            f"({me.node_id if me is not None else 'not joined to a grid'}) records it",
            rule=_RULE,
        )
    return me


def _node_values(signed: SignedAdmission, *, is_self: bool, leaf: int) -> dict[str, Any]:
    a = signed.admission
    return {
        "country": a.country,
        "base_url": a.base_url,
        "public_key": a.public_key,
        "key_id": a.key_id,
        "anchor_id": a.anchor_id,
        "admission": canonical_json(signed.to_json()).decode(),
        "is_self": is_self,
        "admitted_at": a.issued_at,
        "removed_leaf": None,
        "leaf_index": leaf,
    }


def grid_joined(conn: Connection, p: Payload, leaf: int) -> None:
    body = p["body"]
    anchor = PublicKey.from_spki_b64(body["anchor"]["public_key"])
    pinned = conn.execute(select(grid_anchors.c.anchor_id)).scalars().all()
    if pinned and pinned != [anchor.key_id]:
        raise RuleViolation(
            f"this node is pinned to grid anchor {pinned[0][:16]}...; it cannot join the grid "
            f"of anchor {anchor.key_id[:16]}... as well",
            rule=_RULE,
        )
    signed = SignedAdmission.from_json(body["admission"])
    a = signed.verify(anchor)
    if a.node_id != p["signer"]:
        raise RuleViolation(
            f"grid.joined at leaf {leaf} is signed by {p['signer']}, but the admission is for "
            f"{a.node_id}",
            rule=_RULE,
        )
    if not pinned:
        conn.execute(
            insert(grid_anchors).values(
                anchor_id=anchor.key_id, public_key=anchor.to_spki_b64(), leaf_index=leaf
            )
        )
    values = _node_values(signed, is_self=True, leaf=leaf)
    if conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.node_id == a.node_id)).first():
        conn.execute(update(grid_nodes).where(grid_nodes.c.node_id == a.node_id).values(**values))
    else:
        conn.execute(insert(grid_nodes).values(node_id=a.node_id, **values))


def grid_node_admitted(conn: Connection, p: Payload, leaf: int) -> None:
    me = _by_self(conn, p, leaf)
    signed = SignedAdmission.from_json(p["body"]["admission"])
    a = signed.verify(_anchor(conn))
    if a.node_id == me.node_id:
        raise RuleViolation(f"node {a.node_id} is this node; it is no peer of itself", rule=_RULE)
    other = conn.execute(
        select(grid_nodes.c.node_id).where(
            grid_nodes.c.country == a.country,
            grid_nodes.c.node_id != a.node_id,
            grid_nodes.c.removed_leaf.is_(None),
        )
    ).first()
    if other is not None:
        raise Conflict(
            f"the grid has node {other.node_id} for {a.country} already; remove it before "
            f"admitting {a.node_id} (look-ups are routed by country)",
            rule=_RULE,
        )
    values = _node_values(signed, is_self=False, leaf=leaf)
    if conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.node_id == a.node_id)).first():
        conn.execute(update(grid_nodes).where(grid_nodes.c.node_id == a.node_id).values(**values))
    else:
        conn.execute(insert(grid_nodes).values(node_id=a.node_id, **values))


def grid_node_removed(conn: Connection, p: Payload, leaf: int) -> None:
    _by_self(conn, p, leaf)
    node_id = p["body"]["node_id"]
    done = conn.execute(
        update(grid_nodes)
        .where(
            grid_nodes.c.node_id == node_id,
            grid_nodes.c.is_self.is_(False),
            grid_nodes.c.removed_leaf.is_(None),
        )
        .values(removed_leaf=leaf)
    ).rowcount
    if not done:
        raise RuleViolation(f"node {node_id} is not an admitted peer of this node", rule=_RULE)


# -- alerts ---------------------------------------------------------------------------------


def _insert_alert(
    conn: Connection, a: Mapping[str, Any], *, raised_by: str, raised_at: str, leaf: int
) -> None:
    conn.execute(
        insert(alerts).values(
            id=a["id"],
            kind=a["kind"],
            origin_node_id=a["origin_node_id"],
            country=a["country"],
            raised_by=raised_by,
            raised_at=raised_at,
            subject_type=a["subject_type"],
            subject_id=a["subject_id"],
            severity=a["severity"],
            title=a["title"],
            details=a.get("details", {}),
            leaf_index=leaf,
        )
    )


def _check_alert_signer(conn: Connection, p: Payload, leaf: int) -> None:
    a = p["body"]["alert"]
    if a["kind"] not in ALERT_KINDS:
        raise RuleViolation(
            f"alert at leaf {leaf} is of kind {a['kind']!r}; known: {sorted(ALERT_KINDS)}",
            rule=_RULE,
        )
    if a["kind"] == "market_surveillance":
        role = conn.execute(
            select(parties.c.role).where(parties.c.id == p["signer"])
        ).scalar_one_or_none()
        if role != "authority":
            raise RuleViolation(
                f"market-surveillance alert at leaf {leaf} signed by {p['signer']} ({role}); "
                "only a market surveillance authority raises one",
                rule="Regulation (EU) 2019/1020 Art. 20 (products presenting a serious risk)",
            )
    elif p["signer"] != a["origin_node_id"]:
        raise RuleViolation(
            f"split-view alert at leaf {leaf} is signed by {p['signer']}, not by the node that "
            f"found it ({a['origin_node_id']})",
            rule=_RULE,
        )


def alert_raised(conn: Connection, p: Payload, leaf: int) -> None:
    """An alert raised on this node: by an authority, or by the node itself (split view)."""
    _check_alert_signer(conn, p, leaf)
    a = p["body"]["alert"]
    if a["kind"] == "split_view":
        me = _by_self(conn, p, leaf)
        if a["origin_node_id"] != me.node_id:
            raise RuleViolation(f"alert at leaf {leaf} names another origin node", rule=_RULE)
    _insert_alert(conn, a, raised_by=p["signer"], raised_at=p["issued_at"], leaf=leaf)


# -- replication ----------------------------------------------------------------------------


def _origin(conn: Connection, origin_id: str, leaf: int) -> Any:
    row = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == origin_id)).first()
    if row is None or row.is_self or row.removed_leaf is not None:
        state = "unknown" if row is None else "this node" if row.is_self else "removed"
        raise RuleViolation(
            f"replicated statement at leaf {leaf} names origin {origin_id} ({state}); only "
            "admitted peers replicate to this node",
            rule=_RULE,
        )
    return row


def _home(value: str, origin: Any, what: str, leaf: int) -> None:
    _, country = parse_id(value)
    if country != origin.country:
        raise RuleViolation(
            f"replicated {what} {value} at leaf {leaf} is homed in {country}, but came from "
            f"{origin.node_id} ({origin.country}); a node replicates only its own records",
            rule=_RULE,
        )


def _check_inner(conn: Connection, inner: Payload, origin: Any, leaf: int) -> None:
    kind, body = inner["kind"], inner["body"]
    if kind == "party.admitted":
        party = body["party"]
        if party["role"] not in REPLICATED_PARTY_ROLES:
            raise RuleViolation(
                f"party {party['id']} ({party['role']}) at leaf {leaf} is not replicated; only "
                f"{sorted(REPLICATED_PARTY_ROLES)} are known across the grid",
                rule=_RULE,
            )
        _home(party["id"], origin, "party", leaf)
    elif kind == "certificate.issued":
        _home(body["certificate"]["notified_body_id"], origin, "certificate issuer", leaf)
    elif kind in _CERTIFICATE_KINDS:
        nb = conn.execute(
            select(certificates.c.notified_body_id).where(
                certificates.c.id == body["certificate_id"]
            )
        ).scalar_one_or_none()
        if nb is None:
            raise RuleViolation(
                f"replicated {kind} at leaf {leaf}: certificate {body['certificate_id']} is "
                "not known here",
                rule=_RULE,
            )
        _home(nb, origin, "certificate issuer", leaf)
    elif kind == "alert.raised":
        if body["alert"]["origin_node_id"] != origin.node_id:
            raise RuleViolation(
                f"replicated alert at leaf {leaf} names origin {body['alert']['origin_node_id']}"
                f", but came from {origin.node_id}",
                rule=_RULE,
            )
        _check_alert_signer(conn, inner, leaf)
    elif kind == "instrument.event":
        event = body["event"]
        if event["kind"] != "non_compliance_found":
            raise RuleViolation(
                f"life-cycle event {event['kind']} at leaf {leaf} is not replicated; only "
                "non-compliance notices are",
                rule=_RULE,
            )
        _home(event["instrument_id"], origin, "instrument", leaf)
    else:
        raise RuleViolation(f"statements of kind {kind!r} are not replicated", rule=_RULE)


def _notice_alert(inner: Payload, origin: Any) -> dict[str, Any]:
    e = inner["body"]["event"]
    notice = (e.get("details") or {}).get("notice") or {}
    title = str(notice.get("finding") or "non-compliance found")[:300]
    return {
        "id": e["id"],
        "kind": "non_compliance",
        "origin_node_id": origin.node_id,
        "country": origin.country,
        "subject_type": "instrument",
        "subject_id": e["instrument_id"],
        "severity": "high",
        "title": title,
        "details": {"notice": notice, "occurred_at": e["occurred_at"]},
    }


def grid_replicated_projector(kinds: Mapping[str, Projector]) -> Projector:
    """The ``grid.replicated`` projector, projecting inner statements through ``kinds``."""

    def project(conn: Connection, p: Payload, leaf: int) -> None:
        _by_self(conn, p, leaf)
        body = p["body"]
        origin = _origin(conn, body["origin"], leaf)
        envelope = body["statement"]
        try:
            inner = SignedStatement.from_bytes(canonical_json(envelope))
        except VerificationError as exc:
            raise RuleViolation(f"replicated statement at leaf {leaf}: {exc}", rule=_RULE) from None
        if not inner.signed_by(origin.key_id):
            raise RuleViolation(
                f"replicated statement at leaf {leaf} is not signed by the key of its origin "
                f"{origin.node_id}",
                rule=_RULE,
            )
        key = PublicKey.from_spki_b64(origin.public_key)
        inner.verify(lambda kid: key if kid == key.key_id else _unknown(kid, origin.node_id))
        payload = inner.statement.payload()
        _check_inner(conn, payload, origin, leaf)
        digest = inner_digest(envelope)
        if conn.execute(
            select(grid_replicated.c.leaf_index).where(grid_replicated.c.digest == digest)
        ).first():
            raise Conflict(f"statement {digest[:16]}... of {origin.node_id} is applied already")
        conn.execute(
            insert(grid_replicated).values(
                digest=digest, origin_node_id=origin.node_id, kind=payload["kind"], leaf_index=leaf
            )
        )
        if payload["kind"] == "instrument.event":
            _insert_alert(
                conn,
                _notice_alert(payload, origin),
                raised_by=payload["signer"],
                raised_at=payload["issued_at"],
                leaf=leaf,
            )
        elif payload["kind"] == "alert.raised":
            _insert_alert(
                conn,
                payload["body"]["alert"],
                raised_by=payload["signer"],
                raised_at=payload["issued_at"],
                leaf=leaf,
            )
        else:
            kinds[payload["kind"]](conn, payload, leaf)

    return project


def _unknown(key_id: str, origin: str) -> PublicKey:
    raise VerificationError(
        f"replicated statement carries a signature by key {key_id[:16]}..., which is not the "
        f"key of its origin {origin}",
        rule=_RULE,
    )
