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
never depends on another origin's queue. A change of a certificate's status carries no
admissions: its certificate's issue went before it, with them, in the same peer's queue.

**How it lands** (:func:`apply_replication`): each envelope not seen before becomes a
``grid.replicated`` statement in the receiver's own log; its projector checks the origin's
signature against the origin's admitted key and that the origin replicates only its own
records (:mod:`metrocloud.store._grid`), so ``metrocloud audit`` re-checks all of it.

**Many at once** (:data:`BATCH`, used by :mod:`._federation_receiving`): a delivery's run of
``grid.replicate`` messages is *prepared* first, outside the write transaction
(:func:`prepare_replications`: each new envelope parsed, its origin an admitted peer, its
signature verified under the origin's key; a message failing that is refused on its own,
with the reason), then applied in one commit (:func:`apply_prepared`): one log append, one
tree head, bulk look-ups of what was applied before. The projector still checks every
statement in that commit, as it does one by one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.grid.inbox import Refusal
from metrocloud.grid.outbox import enqueue
from metrocloud.store._grid import REPLICATED_PARTY_ROLES, inner_digest
from metrocloud.store.schema import grid_nodes, grid_replicated, parties
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import SignedStatement

if TYPE_CHECKING:
    from metrocloud.grid.peers import Peer
    from metrocloud.services.node import Node

__all__ = [
    "REPLICATE_KIND",
    "PreparedReplication",
    "apply_prepared",
    "apply_replication",
    "backfill",
    "prepare_replications",
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


#: built once: every commit asks it, and a statement built anew each time costs more than
#: the query (SQLAlchemy memoizes a statement object's cache key)
_PEERS = select(grid_nodes.c.node_id).where(
    grid_nodes.c.is_self.is_(False), grid_nodes.c.removed_leaf.is_(None)
)


def _peer_ids(conn: Connection) -> list[str]:
    return list(conn.execute(_PEERS).scalars())


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


def _needs(kind: str, body: Mapping[str, Any], signer: str) -> list[str]:
    """The parties a statement needs on the receiving node, in the order to apply them.

    A status change of a certificate needs none: it can only apply where the certificate's
    issue applied, and the issue, with both parties, went to the same peer before it
    (per-peer FIFO; a new peer's backfill runs in log order)."""
    if kind == "certificate.issued":
        c = body["certificate"]
        return [c["notified_body_id"], c["holder_id"]]
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
        for party_id in _needs(p["kind"], p["body"], p["signer"]):
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


def _applied_before(conn: Connection, digests: Iterable[str]) -> set[str]:
    """Those of ``digests`` applied here before (bulk, in chunks of the IN list)."""
    wanted = list(dict.fromkeys(digests))
    found: set[str] = set()
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        found.update(
            conn.execute(
                select(grid_replicated.c.digest).where(
                    grid_replicated.c.digest.in_(wanted[start : start + _LOOKUP_CHUNK])
                )
            ).scalars()
        )
    return found


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
        statements.append(_replicated(node, origin, envelope))
    if statements:
        node.commit(conn, statements)
    return {"applied": len(statements), "skipped": skipped}


def _replicated(node: Node, origin: str, envelope: Mapping[str, Any]) -> Any:
    return node.statement(
        kind="grid.replicated", signer=node.node_id, body={"origin": origin, "statement": envelope}
    )


# -- many at once ---------------------------------------------------------------------------

_LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class _Item:
    origin: str
    statement: Mapping[str, Any]
    digest: str


@dataclass(frozen=True, slots=True)
class PreparedReplication:
    """A ``grid.replicate`` message whose new envelopes all verified: what
    :func:`apply_prepared` applies (items of this node itself are counted, not applied)."""

    items: tuple[_Item, ...]
    own: int


def _parse_items(payload: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bytes]] | str:
    items = payload.get("items")
    if not isinstance(items, list):
        return "a grid.replicate message carries a list of items"
    out: list[tuple[str, Mapping[str, Any], bytes]] = []
    for n, item in enumerate(items):
        origin = item.get("origin") if isinstance(item, dict) else None
        env = item.get("statement") if isinstance(item, dict) else None
        if not isinstance(origin, str) or not isinstance(env, dict):
            return f"item {n}: not {{origin: node id, statement: signed envelope}}"
        try:
            raw = canonical_json(env)
        except (MetrocloudError, ValueError, TypeError) as exc:
            return f"item {n}: the statement is no canonical JSON value: {exc}"
        out.append((origin, env, raw))
    return out


class _Origins:
    """The admitted nodes' keys, as this node holds them (one read per delivery)."""

    def __init__(self, conn: Connection) -> None:
        self.rows = {r.node_id: r for r in conn.execute(select(grid_nodes))}
        self.keys: dict[str, PublicKey] = {}

    def check(self, origin: str, raw: bytes) -> str | None:
        """Why the envelope ``raw`` of ``origin`` does not hold here (None: it does)."""
        row = self.rows.get(origin)
        if row is None or row.is_self or row.removed_leaf is not None:
            state = "unknown" if row is None else "this node" if row.is_self else "removed"
            return f"origin {origin} is {state} here; only admitted peers replicate to this node"
        try:
            inner = SignedStatement.from_bytes(raw)
            # (1): signed by the origin's admitted key, (2): that signature holds
            if not inner.signed_by(row.key_id):
                raise VerificationError(f"not signed by the key of its origin {origin}")
            key = self.keys.get(origin) or PublicKey.from_spki_b64(row.public_key)
            self.keys[origin] = key
            inner.verify(lambda kid: _origin_key(kid, key, origin))
        except VerificationError as exc:
            return f"statement of {origin}: {exc}"
        return None


def _origin_key(key_id: str, key: PublicKey, origin: str) -> PublicKey:
    if key_id != key.key_id:
        raise VerificationError(
            f"signature by key {key_id[:16]}..., which is not the key of its origin {origin}"
        )
    return key


def prepare_replications(
    node: Node, sender: Peer, payloads: Sequence[Mapping[str, Any]]
) -> list[PreparedReplication | Refusal]:
    """Check the envelopes of ``payloads`` that are new here (outside any write
    transaction): per payload, what :func:`apply_prepared` takes, or why it is refused."""
    parsed = [_parse_items(p) for p in payloads]
    digests = {
        i: [hashlib.sha256(raw).hexdigest() for _, _, raw in items]
        for i, items in enumerate(parsed)
        if not isinstance(items, str)
    }
    with node.db.read() as conn:
        before = _applied_before(conn, (d for ds in digests.values() for d in ds))
        origins = _Origins(conn)
    verified: set[str] = set(before)
    out: list[PreparedReplication | Refusal] = []
    for i, items in enumerate(parsed):
        if isinstance(items, str):
            out.append(Refusal(items))
            continue
        chosen: list[_Item] = []
        own = 0
        refusal = None
        for n, ((origin, env, raw), digest) in enumerate(zip(items, digests[i], strict=True)):
            if origin == node.node_id:
                own += 1
                continue
            if digest not in verified:
                reason = origins.check(origin, raw)
                if reason is not None:
                    refusal = Refusal(f"item {n}: {reason}")
                    break
                verified.add(digest)
            chosen.append(_Item(origin, env, digest))
        out.append(refusal or PreparedReplication(items=tuple(chosen), own=own))
    return out


def apply_prepared(
    conn: Connection, node: Node, prepared: Sequence[PreparedReplication]
) -> list[dict[str, int]]:
    """Apply ``prepared`` messages in order in one commit (the caller's transaction); per
    message, what it applied and skipped (as :func:`apply_replication` answers)."""
    seen = _applied_before(conn, (it.digest for p in prepared for it in p.items))
    statements = []
    answers = []
    for p in prepared:
        applied = 0
        for it in p.items:
            if it.digest in seen:
                continue
            seen.add(it.digest)
            statements.append(_replicated(node, it.origin, it.statement))
            applied += 1
        answers.append({"applied": applied, "skipped": p.own + len(p.items) - applied})
    if statements:
        node.commit(conn, statements)
    return answers
