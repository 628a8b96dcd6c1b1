"""The peer list: the nodes this node admitted into its view of the grid (``grid_nodes``).

The rows are a view of the log (``grid.joined``, ``grid.node_admitted``, ``grid.node_removed``
statements, projected by :mod:`metrocloud.store._grid`), so ``metrocloud audit`` re-checks
them like every other registry table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import Forbidden, NotFound
from metrocloud.store.schema import grid_anchors, grid_nodes
from metrocloud.trust.admission import SignedAdmission
from metrocloud.trust.keys import PublicKey

__all__ = ["Peer", "anchor_key", "home_of", "load_nodes", "peer", "peers", "self_node"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Peer:
    """An admitted node as this node knows it."""

    node_id: str
    country: str
    base_url: str
    key: PublicKey
    is_self: bool
    removed: bool
    admission: SignedAdmission
    admitted_leaf: int

    @property
    def expires_at(self) -> str:
        return self.admission.admission.expires_at


def _peer(r: Any) -> Peer:
    return Peer(
        node_id=r.node_id,
        country=r.country,
        base_url=r.base_url,
        key=PublicKey.from_spki_b64(r.public_key),
        is_self=bool(r.is_self),
        removed=r.removed_leaf is not None,
        admission=SignedAdmission.from_json(json.loads(r.admission)),
        admitted_leaf=r.leaf_index,
    )


def load_nodes(conn: Connection) -> list[Peer]:
    """Every node in the list, this node included, removed ones included."""
    return [_peer(r) for r in conn.execute(select(grid_nodes).order_by(grid_nodes.c.node_id))]


def peers(conn: Connection) -> list[Peer]:
    """The other nodes this node talks to (admitted, not removed)."""
    return [p for p in load_nodes(conn) if not p.is_self and not p.removed]


def self_node(conn: Connection) -> Peer | None:
    """This node's own admission, None before ``metrocloud grid join``."""
    row = conn.execute(select(grid_nodes).where(grid_nodes.c.is_self.is_(True))).first()
    return _peer(row) if row is not None else None


def peer(conn: Connection, node_id: str, *, at: datetime | None = None) -> Peer:
    """The admitted, not removed, other node ``node_id`` (valid at ``at`` if given)."""
    row = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == node_id)).first()
    if row is None:
        raise NotFound(f"node {node_id} is not in this node's peer list")
    p = _peer(row)
    if p.is_self:
        raise Forbidden(f"node {node_id} is this node itself")
    if p.removed:
        raise Forbidden(f"node {node_id} was removed from this node's peer list")
    if at is not None:
        anchor = anchor_key(conn)
        if anchor is None:
            raise NotFound("this node has pinned no grid anchor ('metrocloud grid join')")
        p.admission.verify(anchor, at=at)
    return p


def home_of(conn: Connection, country: str) -> Peer | None:
    """The node of ``country`` (this node or a peer), None if the grid has none."""
    for p in load_nodes(conn):
        if p.country == country and not p.removed:
            return p
    return None


def anchor_key(conn: Connection) -> PublicKey | None:
    row = conn.execute(select(grid_anchors.c.public_key)).first()
    return PublicKey.from_spki_b64(row.public_key) if row is not None else None
