"""The Legal Metrology Grid, as one node takes part in it (docs/grid.md).

Joining and the peer list (:func:`join_grid`, :func:`add_peer`, :func:`remove_peer`) are
signed statements in the node's log. Replication of what is EU-wide runs by itself: every
commit queues its EU-wide statements for the peers (:mod:`._federation_replication`), the
outbox worker delivers them. Look-ups of instruments homed elsewhere
(:func:`lookup_instrument`), federated statistics (:func:`federated_statistic`) and the
witnessing of the peers' logs (:func:`witness_round`) complete it.

For other services, two doors: :func:`send_to_node` puts an opaque payload for another node
into the outbox (in the caller's transaction, if it passes one), and :func:`on_message`
registers the handler that receives a kind of payload on the other side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import Conflict, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.client import Transport
from metrocloud.grid.outbox import backlog, cancel_for_peer, enqueue
from metrocloud.grid.peers import Peer, anchor_key, load_nodes, self_node
from metrocloud.grid.witness import cosignatures, observations
from metrocloud.services import _federation_lookup as _lookup
from metrocloud.services import _federation_stats as _stats
from metrocloud.services import _federation_witness as _witness
from metrocloud.services._federation_core import (
    MessageHandler,
    QueryHandler,
    answer_query,
    authenticate_node,
    deliver_now,
    on_message,
    on_query,
    receive_messages,
    record_incoming,
    runtime,
    set_transport,
    stop_grid,
    take_grid_lock,
)
from metrocloud.services._federation_core import start_grid as _start_grid
from metrocloud.services._federation_receiving import BatchHandler, on_message_batch
from metrocloud.services._federation_replication import (
    REPLICATE_KIND,
    PreparedReplication,
    apply_prepared,
    apply_replication,
    backfill,
    prepare_replications,
)
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.store.schema import grid_peer_status
from metrocloud.trust.admission import SignedAdmission
from metrocloud.trust.keys import PublicKey

__all__ = [
    "MessageHandler",
    "QueryHandler",
    "add_peer",
    "answer_query",
    "authenticate_node",
    "cosignatures_of",
    "deliver_now",
    "federated_statistic",
    "grid_status",
    "join_grid",
    "list_peers",
    "lookup_instrument",
    "on_message",
    "on_query",
    "receive_messages",
    "record_incoming",
    "remove_peer",
    "runtime",
    "send_to_node",
    "set_transport",
    "start_grid",
    "stop_grid",
    "sync",
    "take_grid_lock",
    "witness_round",
]

lookup_instrument = _lookup.lookup_instrument
federated_statistic = _stats.federated_statistic
witness_round = _witness.witness_round
_RULE = "metrocloud grid admission (docs/grid.md#admission)"


def _replicate(
    node: Node, conn: Connection, sender: Peer, payload: Mapping[str, Any]
) -> dict[str, Any]:
    return apply_replication(conn, node, payload)


def _weight(prepared: Any) -> int:
    return len(prepared.items) if isinstance(prepared, PreparedReplication) else 1


on_message(REPLICATE_KIND, _replicate)
on_message_batch(
    REPLICATE_KIND,
    BatchHandler(
        prepare=prepare_replications,
        apply=lambda node, conn, sender, prepared: apply_prepared(conn, node, prepared),
        weight=_weight,
    ),
)


def _peer_out(p: Peer) -> dict[str, Any]:
    return {
        "node_id": p.node_id,
        "country": p.country,
        "base_url": p.base_url,
        "key_id": p.key.key_id,
        "expires_at": p.expires_at,
        "is_self": p.is_self,
        "removed": p.removed,
        "leaf_index": p.admitted_leaf,
    }


def _admin(actor: Actor | None) -> None:
    if actor is not None:
        require_role(actor, PartyRole.NODE_ADMIN, action="manage the grid link")


def join_grid(
    node: Node, admission: Mapping[str, Any], anchor: PublicKey, actor: Actor | None = None
) -> dict[str, Any]:
    """Pin the grid's ``anchor`` and record this node's own ``admission`` under it."""
    _admin(actor)
    signed = SignedAdmission.from_json(admission)
    a = signed.verify(anchor, at=node.now())
    if a.key_id != node.key.key_id or a.node_id != node.node_id:
        raise InvalidInput(
            f"the admission is for node {a.node_id} (key {a.key_id[:16]}...), this node is "
            f"{node.node_id} (key {node.key.key_id[:16]}...)",
            rule=_RULE,
        )
    body = {
        "anchor": {"anchor_id": anchor.key_id, "public_key": anchor.to_spki_b64()},
        "admission": signed.to_json(),
    }
    with node.db.write() as conn:
        node.commit(conn, [node.statement(kind="grid.joined", signer=node.node_id, body=body)])
        me = next(p for p in load_nodes(conn) if p.is_self)
    return _peer_out(me)


def add_peer(
    node: Node, admission: Mapping[str, Any], actor: Actor | None = None
) -> dict[str, Any]:
    """Admit another node into this node's peer list (checked under the pinned anchor), and
    queue everything EU-wide this node holds for it."""
    _admin(actor)
    signed = SignedAdmission.from_json(admission)
    with node.db.write() as conn:
        anchor = anchor_key(conn)
        if anchor is None or self_node(conn) is None:
            raise Conflict(
                "this node has not joined a grid; run 'metrocloud grid join' first", rule=_RULE
            )
        a = signed.verify(anchor, at=node.now())
        if a.node_id == node.node_id:
            raise InvalidInput(f"{a.node_id} is this node itself; it is no peer", rule=_RULE)
        node.commit(
            conn,
            [
                node.statement(
                    kind="grid.node_admitted",
                    signer=node.node_id,
                    body={"admission": signed.to_json()},
                )
            ],
        )
        queued = backfill(conn, node, a.node_id)
        row = next(p for p in load_nodes(conn) if p.node_id == a.node_id)
    return {**_peer_out(row), "backfill": queued}


def remove_peer(
    node: Node, node_id: str, *, reason: str, actor: Actor | None = None
) -> dict[str, Any]:
    """Take a node off the peer list: no more messages to or from it."""
    _admin(actor)
    if not reason.strip():
        raise InvalidInput("removing a peer needs a reason (it goes into the log)")
    with node.db.write() as conn:
        node.commit(
            conn,
            [
                node.statement(
                    kind="grid.node_removed",
                    signer=node.node_id,
                    body={"node_id": node_id, "reason": reason.strip()},
                )
            ],
        )
        cancelled = cancel_for_peer(conn, node_id, f"peer removed: {reason.strip()}")
    return {"node_id": node_id, "removed": True, "cancelled_messages": cancelled}


def list_peers(node: Node) -> list[dict[str, Any]]:
    with node.db.read() as conn:
        return [_peer_out(p) for p in load_nodes(conn)]


def send_to_node(
    node: Node,
    target: str,
    kind: str,
    payload: Mapping[str, Any],
    *,
    conn: Connection | None = None,
) -> str:
    """Queue ``payload`` for the node ``target`` (a node id or a country code), to be handed
    to the handler registered there for ``kind`` (:func:`on_message`); durable and delivered
    once. Pass ``conn`` to commit the message with the caller's own transaction. Returns the
    message id."""

    def queue(c: Connection) -> str:
        to = next(
            (p for p in load_nodes(c) if not p.removed and target in (p.node_id, p.country)),
            None,
        )
        if to is None:
            raise NotFound(f"no admitted node {target} in this node's peer list", rule=_RULE)
        if to.is_self:
            raise InvalidInput(f"{target} is this node itself; nothing to send")
        return enqueue(
            c,
            peer_ids=[to.node_id],
            kind=kind,
            payload=payload,
            created_at=node.timestamp(),
            now_ms=int(node.now().timestamp() * 1000),
        )

    if conn is not None:
        return queue(conn)
    with node.db.write() as c:
        return queue(c)


def start_grid(node: Node) -> Any:
    """Deliver the outbox and witness the peers in the background (the app's lifespan)."""
    return _start_grid(node, witness_round)


def sync(node: Node, *, transport: Transport | None = None) -> dict[str, Any]:
    """One delivery round and one witnessing round, now, in this process."""
    if transport is not None:
        set_transport(node, transport)
    delivered = deliver_now(node)
    report = witness_round(node)
    return {
        "delivered": delivered.delivered,
        "retried": delivered.retried,
        "failed": delivered.failed,
        "errors": delivered.errors,
        "witnessed": report.witnessed,
        "unreachable": report.unreachable,
        "split_views": report.split_views,
    }


def cosignatures_of(node: Node, tree_size: int | None = None) -> dict[str, Any]:
    """The witnesses' cosignatures over this node's tree heads (newest size first)."""
    with node.db.read() as conn:
        found = cosignatures(conn, node.node_id, tree_size=tree_size)
    return {"log_id": node.node_id, "cosignatures": [c.to_json() for c in found]}


def grid_status(node: Node, actor: Actor | None = None) -> dict[str, Any]:
    """Peers, their lag (outbox backlog, last contact) and the last heads witnessed."""
    if actor is not None:
        require_role(
            actor, PartyRole.NODE_ADMIN, PartyRole.AUTHORITY, action="read the grid status"
        )
    with node.db.read() as conn:
        me = self_node(conn)
        nodes = load_nodes(conn)
        queues = backlog(conn)
        links = {r.node_id: r for r in conn.execute(select(grid_peer_status))}
        own = node.log.latest_head(conn)
        witnessed: dict[str, Any] = {}
        for p in nodes:
            if p.is_self:
                continue
            verified = [o for o in observations(conn, p.node_id) if o.verified]
            if verified:
                last = max(verified, key=lambda o: (o.head.tree_size, o.observed_at))
                witnessed[p.node_id] = {
                    "tree_size": last.head.tree_size,
                    "root_hash": last.head.root_hash.hex(),
                    "timestamp": last.head.timestamp,
                    "observed_by": last.observer,
                    "observed_at": last.observed_at,
                }
        cos = cosignatures(conn, node.node_id, tree_size=own.tree_size) if own else []
    peers_out = []
    for p in nodes:
        if p.is_self:
            continue
        q = queues.get(p.node_id)
        link = links.get(p.node_id)
        peers_out.append(
            {
                **_peer_out(p),
                "outbox": {
                    "pending": q.pending if q else 0,
                    "failed": q.failed if q else 0,
                    "delivered": q.delivered if q else 0,
                    "oldest_pending_at": q.oldest_pending_at if q else None,
                    "last_error": q.last_error if q else None,
                },
                "last_contact_at": link.last_contact_at if link else None,
                "last_delivery_at": link.last_delivery_at if link else None,
                "last_error_at": link.last_error_at if link else None,
                "last_error": link.last_error if link else None,
                "witnessed_head": witnessed.get(p.node_id),
            }
        )
    return {
        "node_id": node.node_id,
        "country": node.country,
        "joined": me is not None,
        "self_node": _peer_out(me) if me else None,
        "tree_head": own.to_json() if own else None,
        "cosigned_by": sorted(c.witness for c in cos),
        "peers": peers_out,
    }
