"""The witnessing round: fetch, check, co-sign and gossip every peer's tree head.

Each round, for every peer: ask for its newest signed tree head together with a consistency
proof from the largest head of it this node has verified (query ``tree-head``); check the
signature under the peer's admitted key; check the head against every head of that peer
seen so far, by this node or gossiped by another (:mod:`metrocloud.grid.witness`); co-sign
it and send the cosignature to the peer (outbox message ``grid.cosignature``). Then tell
every peer the newest head this node verified of every node (query ``gossip``).

A peer that shows one history to this node and another to a third node is caught within one
round: the third node gossips the head it saw, and two heads of one size with different
roots (or a consistency proof that fails) are a **split view**. The node raises an alert
(``alert.raised`` of kind ``split_view``, signed by the node, replicated to every node)
with both signed heads as evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.grid.errors import PeerRefused, PeerUnavailable
from metrocloud.grid.outbox import enqueue
from metrocloud.grid.peers import Peer, load_nodes, peers, self_node
from metrocloud.grid.witness import (
    Cosignature,
    add_observation,
    check_link,
    cosign,
    neighbours,
    observations,
    same_size_conflict,
    store_cosignature,
)
from metrocloud.ledger.heads import SignedTreeHead
from metrocloud.services._federation_core import call_peer, on_message, on_query
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.store.schema import alerts, grid_cosignatures

__all__ = ["COSIGNATURE_KIND", "WitnessReport", "witness_round"]

log = logging.getLogger("metrocloud.grid")

COSIGNATURE_KIND = "grid.cosignature"
HEAD_QUERY = "tree-head"
GOSSIP_QUERY = "gossip"
_MAX_PAIRS = 16
_MAX_GOSSIP = 500


@dataclass(kw_only=True)
class WitnessReport:
    witnessed: dict[str, int] = field(default_factory=dict)  # peer -> verified tree size
    unreachable: list[str] = field(default_factory=list)
    split_views: list[str] = field(default_factory=list)


# -- answering -------------------------------------------------------------------------------


def _pairs(raw: Any, size: int) -> list[tuple[int, int]]:
    if not isinstance(raw, list) or len(raw) > _MAX_PAIRS:
        raise InvalidInput(f"a tree-head query asks for at most {_MAX_PAIRS} proofs")
    out = []
    for p in raw:
        if (
            not isinstance(p, list)
            or len(p) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in p)
        ):
            raise InvalidInput(f"a proof is asked for as [first, second], got {p!r:.60}")
        if not 0 < p[0] <= p[1] <= size:
            raise InvalidInput(
                f"consistency proof [{p[0]}, {p[1]}] needs 0 < first <= second <= {size} "
                "(RFC 9162 §2.1.4.1)"
            )
        out.append((p[0], p[1]))
    return out


def _answer_tree_head(node: Node, sender: Peer, args: Mapping[str, Any]) -> dict[str, Any]:
    with node.db.write() as conn:
        head = node.log.latest_head(conn) or node.log.sign_head(conn)
        size = head.tree_size
        froms = args.get("from", [])
        if not isinstance(froms, list):
            raise InvalidInput("'from' is a list of tree sizes")
        pairs = [(f, size) for f in froms if isinstance(f, int) and 0 < f <= size]
        pairs += _pairs(args.get("pairs", []), size)
        proofs = [
            {
                "first": a,
                "second": b,
                "proof": [h.hex() for h in node.log.consistency_proof(conn, a, b)],
            }
            for a, b in pairs[:_MAX_PAIRS]
        ]
    return {"head": head.to_json(), "proofs": proofs}


def _answer_gossip(node: Node, sender: Peer, args: Mapping[str, Any]) -> dict[str, Any]:
    heads = args.get("heads")
    if not isinstance(heads, list) or len(heads) > _MAX_GOSSIP:
        raise InvalidInput(f"gossip carries a list of at most {_MAX_GOSSIP} heads")
    conflicts = 0
    with node.db.write() as conn:
        nodes = {p.node_id: p for p in load_nodes(conn)}
        for item in heads:
            head = SignedTreeHead.from_json(item)
            origin = nodes.get(head.log_id)
            if origin is None or origin.removed:
                continue  # a node this one does not know: nothing to compare with
            head.verify(origin.key)
            if origin.is_self:
                conflicts += _check_own(node, conn, head, sender)
            else:
                conflicts += _observe(node, conn, origin, head, observer=sender.node_id)
    return {"received": len(heads), "split_views": conflicts}


def _check_own(node: Node, conn: Connection, head: SignedTreeHead, sender: Peer) -> int:
    """A head in this node's name, as a peer saw it: is it the one this node signed?"""
    size = node.log.tree_size(conn)
    if head.tree_size > size or node.log.root_hash(conn, head.tree_size) != head.root_hash:
        mine = node.log.latest_head(conn) or node.log.sign_head(conn)
        _raise_split_view(
            node,
            conn,
            node.node_id,
            (mine, head),
            f"node {sender.node_id} saw a head of this node's log at size {head.tree_size} "
            "that this node never signed: its signing key may be compromised",
        )
        return 1
    return 0


def _on_cosignature(
    node: Node, conn: Connection, sender: Peer, payload: Mapping[str, Any]
) -> dict[str, Any]:
    cos = Cosignature.from_json(payload.get("cosignature") or {})
    if cos.witness != sender.node_id or cos.log_id != node.node_id:
        raise VerificationError(
            f"cosignature by {cos.witness} over log {cos.log_id} delivered by {sender.node_id} "
            f"to {node.node_id}"
        )
    cos.verify(sender.key)
    mine = node.log.head(conn, cos.tree_size)
    if not cos.covers(mine):
        raise VerificationError(
            f"node {sender.node_id} co-signed a head of size {cos.tree_size} with root "
            f"{cos.root_hash[:16]}... that this node did not sign (its root there is "
            f"{mine.root_hash.hex()[:16]}...)"
        )
    return {"stored": store_cosignature(conn, node.node_id, cos)}


on_query(HEAD_QUERY, _answer_tree_head)
on_query(GOSSIP_QUERY, _answer_gossip)
on_message(COSIGNATURE_KIND, _on_cosignature)


# -- checking a head against what was seen ---------------------------------------------------


def _raise_split_view(
    node: Node,
    conn: Connection,
    origin: str,
    heads: tuple[SignedTreeHead, SignedTreeHead],
    reason: str,
    proof: Sequence[str] = (),
) -> None:
    roots = sorted(f"{h.tree_size}:{h.root_hash.hex()}" for h in heads)
    for row in conn.execute(
        select(alerts.c.details).where(alerts.c.kind == "split_view", alerts.c.subject_id == origin)
    ):
        if (row.details or {}).get("roots") == roots:
            return  # raised already, on this evidence
    log.error("grid: SPLIT VIEW of %s: %s", origin, reason)
    alert = {
        "id": new_id("alt", node.country),
        "kind": "split_view",
        "origin_node_id": node.node_id,
        "country": node.country,
        "subject_type": "node",
        "subject_id": origin,
        "severity": "serious",
        "title": f"split view: node {origin} showed two different histories of its log",
        "details": {
            "reason": reason,
            "roots": roots,
            "heads": [h.to_json() for h in heads],
            "proof": list(proof),
        },
    }
    node.commit(
        conn,
        [node.statement(kind="alert.raised", signer=node.node_id, body={"alert": alert})],
    )


def _observe(
    node: Node,
    conn: Connection,
    origin: Peer,
    head: SignedTreeHead,
    *,
    observer: str,
    proofs: Mapping[tuple[int, int], list[str]] | None = None,
) -> int:
    """Record ``head`` of ``origin``; 1 if it shows a split view, else 0.

    Without the proofs it needs (a gossiped head), the head waits unverified for the next
    round; a head of a size already seen with another root is a split view at once."""
    seen = observations(conn, origin.node_id)
    conflict = same_size_conflict([o.head for o in seen], head)
    at = node.timestamp()
    if conflict is not None:
        add_observation(conn, origin.node_id, head, observer=observer, verified=False, at=at)
        _raise_split_view(
            node,
            conn,
            origin.node_id,
            (conflict, head),
            f"two heads of size {head.tree_size} signed by {origin.node_id} with different "
            f"roots ({conflict.root_hash.hex()[:16]}... and {head.root_hash.hex()[:16]}...)",
        )
        return 1
    shrank = next(
        (
            o.head
            for o in seen
            if (o.head.timestamp < head.timestamp and o.head.tree_size > head.tree_size)
            or (o.head.timestamp > head.timestamp and o.head.tree_size < head.tree_size)
        ),
        None,
    )
    if shrank is not None:  # a log only grows: a later head of a smaller tree is a fork
        add_observation(conn, origin.node_id, head, observer=observer, verified=False, at=at)
        first, last = sorted((shrank, head), key=lambda h: h.timestamp)
        _raise_split_view(
            node,
            conn,
            origin.node_id,
            (first, last),
            f"{origin.node_id} signed a head of size {first.tree_size} and later one of size "
            f"{last.tree_size}: its log cannot shrink (RFC 9162 §2.1.4)",
        )
        return 1
    verified = [o.head for o in seen if o.verified]
    if any(h.tree_size == head.tree_size for h in verified):
        add_observation(conn, origin.node_id, head, observer=observer, verified=True, at=at)
        return 0
    if proofs is None:
        add_observation(conn, origin.node_id, head, observer=observer, verified=False, at=at)
        return 0
    before, after = neighbours(verified, head.tree_size)
    for older, newer in ((before, head), (head, after)):
        if older is None or newer is None or older.tree_size == 0:
            continue
        proof = proofs.get((older.tree_size, newer.tree_size))
        if proof is None:
            add_observation(conn, origin.node_id, head, observer=observer, verified=False, at=at)
            return 0
        reason = check_link(older, newer, [bytes.fromhex(h) for h in proof])
        if reason is not None:
            add_observation(conn, origin.node_id, head, observer=observer, verified=False, at=at)
            _raise_split_view(node, conn, origin.node_id, (older, newer), reason, proof)
            return 1
    add_observation(conn, origin.node_id, head, observer=observer, verified=True, at=at)
    return 0


# -- the round -------------------------------------------------------------------------------


def _needed_pairs(seen: Sequence[SignedTreeHead], heads: Sequence[SignedTreeHead]) -> list[Any]:
    verified = list(seen)
    pairs: list[list[int]] = []
    for h in heads:
        before, after = neighbours(verified, h.tree_size)
        if before is not None and before.tree_size > 0:
            pairs.append([before.tree_size, h.tree_size])
        if after is not None and h.tree_size > 0:
            pairs.append([h.tree_size, after.tree_size])
    return pairs[:_MAX_PAIRS]


def _witness_peer(node: Node, me: str, origin: Peer, report: WitnessReport) -> None:
    with node.db.read() as conn:
        seen = observations(conn, origin.node_id)
    verified = [o.head for o in seen if o.verified]
    largest = max((h.tree_size for h in verified), default=0)
    answer = call_peer(node, origin, HEAD_QUERY, {"from": [largest] if largest else []})
    head = SignedTreeHead.from_json(answer["head"])
    if head.log_id != origin.node_id:
        raise VerificationError(f"node {origin.node_id} answered with the head of {head.log_id}")
    head.verify(origin.key)
    proofs = {(p["first"], p["second"]): p["proof"] for p in answer.get("proofs", [])}
    pending = [o.head for o in seen if not o.verified]
    # the new head against what was verified; what waits (gossiped) also against the new head
    wanted = _needed_pairs(verified, [head]) + _needed_pairs([*verified, head], pending)
    extra = [p for p in wanted if (p[0], p[1]) not in proofs and p[1] <= head.tree_size]
    if extra:
        more = call_peer(node, origin, HEAD_QUERY, {"pairs": extra})
        proofs.update({(p["first"], p["second"]): p["proof"] for p in more.get("proofs", [])})
    with node.db.write() as conn:
        found = _observe(node, conn, origin, head, observer=me, proofs=proofs)
        for h in pending:
            found += _observe(node, conn, origin, h, observer=me, proofs=proofs)
        if found:
            report.split_views.append(origin.node_id)
            return
        report.witnessed[origin.node_id] = head.tree_size
        exists = conn.execute(
            select(grid_cosignatures.c.signed_at).where(
                grid_cosignatures.c.origin_id == origin.node_id,
                grid_cosignatures.c.tree_size == head.tree_size,
                grid_cosignatures.c.root_hash == head.root_hash.hex(),
                grid_cosignatures.c.witness_id == me,
            )
        ).first()
        if exists is None and head.tree_size > 0:
            cos = cosign(head, node.key, witness=me, signed_at=node.timestamp())
            store_cosignature(conn, origin.node_id, cos)
            enqueue(
                conn,
                peer_ids=[origin.node_id],
                kind=COSIGNATURE_KIND,
                payload={"cosignature": cos.to_json()},
                created_at=node.timestamp(),
                now_ms=int(node.now().timestamp() * 1000),
            )


def _latest_verified(conn: Connection, origin: str) -> SignedTreeHead | None:
    heads = [o.head for o in observations(conn, origin) if o.verified]
    return max(heads, key=lambda h: h.tree_size) if heads else None


def witness_round(node: Node) -> WitnessReport:
    """One round over every peer, then gossip (see the module docstring)."""
    report = WitnessReport()
    with node.db.read() as conn:
        me = self_node(conn)
        targets = peers(conn)
    if me is None:
        return report
    for origin in targets:
        try:
            _witness_peer(node, me.node_id, origin, report)
        except (PeerUnavailable, PeerRefused) as exc:
            report.unreachable.append(origin.node_id)
            log.info("grid: witnessing %s: %s", origin.node_id, exc)
        except MetrocloudError as exc:  # a head or proof that does not even parse or verify
            report.unreachable.append(origin.node_id)
            log.warning("grid: witnessing %s: %s", origin.node_id, exc)
    with node.db.write() as conn:
        own = node.log.latest_head(conn) or node.log.sign_head(conn)
        heads = [own.to_json()]
        for origin in targets:
            h = _latest_verified(conn, origin.node_id)
            if h is not None:
                heads.append(h.to_json())
    for to in targets:
        try:
            call_peer(node, to, GOSSIP_QUERY, {"heads": heads})
        except (PeerUnavailable, PeerRefused) as exc:
            log.info("grid: gossip to %s: %s", to.node_id, exc)
    return report
