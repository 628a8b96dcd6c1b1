"""Replication of what is EU-wide: which statements travel, with what, and how they land.

**What travels** (:func:`replicable`): admissions of manufacturers, notified bodies and
authorities; certificates and every change of their status (issued, revised, suspended,
reinstated, withdrawn - so a notified body's refusals and withdrawals reach the other
notified bodies); market-surveillance alerts and split-view alerts; non-compliance notices
(``instrument.event`` of kind ``non_compliance_found``).

**How it leaves** (:func:`queue_replication`, called by :meth:`Node.commit` inside the
transaction that appends the statements): one outbox message per commit and peer, kind
``grid.replicate``, carrying each statement's signed envelope exactly as it stands in this
node's log, preceded by the party admissions it needs on the other side (the issuing
notified body and the holder of a certificate, the authority behind an alert), so a message
never depends on another origin's queue.

**How it lands** (:func:`apply_replication`): each envelope not seen before becomes a
``grid.replicated`` statement in the receiver's own log; its projector checks the origin's
signature against the origin's admitted key and that the origin replicates only its own
records (:mod:`metrocloud.store._grid`), so ``metrocloud audit`` re-checks all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import InvalidInput
from metrocloud.grid.outbox import enqueue
from metrocloud.store._grid import REPLICATED_PARTY_ROLES, inner_digest
from metrocloud.store.schema import certificates, grid_nodes, grid_replicated, parties
from metrocloud.trust.statements import SignedStatement

if TYPE_CHECKING:
    from metrocloud.services.node import Node

__all__ = [
    "REPLICATE_KIND",
    "apply_replication",
    "backfill",
    "queue_replication",
    "replicable",
]

REPLICATE_KIND = "grid.replicate"
_CERTIFICATE_KINDS = frozenset(
    {
        "certificate.issued",
        "certificate.revised",
        "certificate.suspended",
        "certificate.reinstated",
        "certificate.withdrawn",
    }
)
_KINDS = frozenset({"party.admitted", "alert.raised", "instrument.event", *_CERTIFICATE_KINDS})
_BACKFILL_CHUNK = 200


def replicable(kind: str, body: Mapping[str, Any]) -> bool:
    """Does a statement of ``kind`` with ``body`` go to every node of the grid?"""
    if kind not in _KINDS:
        return False
    if kind == "party.admitted":
        return body["party"]["role"] in REPLICATED_PARTY_ROLES
    if kind == "instrument.event":
        return bool(body["event"]["kind"] == "non_compliance_found")
    return True


def _peer_ids(conn: Connection) -> list[str]:
    return list(
        conn.execute(
            select(grid_nodes.c.node_id).where(
                grid_nodes.c.is_self.is_(False), grid_nodes.c.removed_leaf.is_(None)
            )
        ).scalars()
    )


def _party_item(conn: Connection, node: Node, party_id: str) -> dict[str, Any] | None:
    """The statement that admitted ``party_id`` here, as a replication item (or None)."""
    row = conn.execute(
        select(parties.c.role, parties.c.leaf_index).where(parties.c.id == party_id)
    ).first()
    if row is None or row.role not in REPLICATED_PARTY_ROLES:
        return None
    envelope = json.loads(node.log.entry(conn, row.leaf_index))
    payload = envelope["payload"]
    if payload["kind"] == "grid.replicated":  # a party of another node: pass its own envelope
        return {"origin": payload["body"]["origin"], "statement": payload["body"]["statement"]}
    return {"origin": node.node_id, "statement": envelope}


def _needs(conn: Connection, kind: str, body: Mapping[str, Any], signer: str) -> list[str]:
    """The parties a statement needs on the receiving node, in the order to apply them."""
    if kind == "certificate.issued":
        c = body["certificate"]
        return [c["notified_body_id"], c["holder_id"]]
    if kind in _CERTIFICATE_KINDS:
        row = conn.execute(
            select(certificates.c.notified_body_id, certificates.c.holder_id).where(
                certificates.c.id == body["certificate_id"]
            )
        ).first()
        return [row.notified_body_id, row.holder_id] if row is not None else []
    if kind in ("alert.raised", "instrument.event"):
        return [signer]
    return []


def _items(
    conn: Connection, node: Node, envelopes: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for env in envelopes:
        p = env["payload"]
        for party_id in _needs(conn, p["kind"], p["body"], p["signer"]):
            dep = _party_item(conn, node, party_id)
            if dep is not None and inner_digest(dep["statement"]) not in seen:
                seen.add(inner_digest(dep["statement"]))
                items.append(dep)
        digest = inner_digest(env)
        if digest not in seen:
            seen.add(digest)
            items.append({"origin": node.node_id, "statement": dict(env)})
    return items


def queue_replication(conn: Connection, node: Node, signed: Sequence[SignedStatement]) -> None:
    """Queue the replicable ``signed`` statements for every peer (the caller's transaction)."""
    chosen = [s for s in signed if replicable(s.statement.kind, s.statement.body)]
    if not chosen:
        return
    peer_ids = _peer_ids(conn)
    if not peer_ids:
        return
    envelopes = [json.loads(s.to_bytes()) for s in chosen]
    enqueue(
        conn,
        peer_ids=peer_ids,
        kind=REPLICATE_KIND,
        payload={"items": _items(conn, node, envelopes)},
        created_at=node.timestamp(),
        now_ms=int(node.now().timestamp() * 1000),
    )


def backfill(conn: Connection, node: Node, peer_id: str) -> int:
    """Queue every replicable statement of this node's own log for a newly added peer, in
    log order; returns how many statements."""
    size = node.log.tree_size(conn)
    chunk: list[dict[str, Any]] = []
    total = 0

    def flush() -> None:
        if chunk:
            enqueue(
                conn,
                peer_ids=[peer_id],
                kind=REPLICATE_KIND,
                payload={"items": _items(conn, node, chunk)},
                created_at=node.timestamp(),
                now_ms=int(node.now().timestamp() * 1000),
            )
            chunk.clear()

    for _index, entry in node.log.entries(conn, 0, size):
        envelope = json.loads(entry)
        p = envelope["payload"]
        if replicable(p["kind"], p["body"]):
            chunk.append(envelope)
            total += 1
            if len(chunk) >= _BACKFILL_CHUNK:
                flush()
    flush()
    return total


def apply_replication(conn: Connection, node: Node, payload: Mapping[str, Any]) -> dict[str, int]:
    """Apply the items of a ``grid.replicate`` message not applied before, in one commit."""
    items = payload.get("items")
    if not isinstance(items, list):
        raise InvalidInput("a grid.replicate message carries a list of items")
    statements = []
    seen: set[str] = set()
    skipped = 0
    for item in items:
        origin, envelope = item["origin"], item["statement"]
        digest = inner_digest(envelope)
        if origin == node.node_id or digest in seen:
            skipped += 1
            continue
        if conn.execute(
            select(grid_replicated.c.leaf_index).where(grid_replicated.c.digest == digest)
        ).first():
            skipped += 1
            continue
        seen.add(digest)
        statements.append(
            node.statement(
                kind="grid.replicated",
                signer=node.node_id,
                body={"origin": origin, "statement": envelope},
            )
        )
    if statements:
        node.commit(conn, statements)
    return {"applied": len(statements), "skipped": skipped}
