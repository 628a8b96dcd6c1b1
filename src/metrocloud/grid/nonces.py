"""Replay protection: the nonces of node requests seen within the clock-skew window.

A nonce is kept until the request's time plus the window has passed; a request older than
that is refused by its time alone (:func:`metrocloud.grid.signing.verify_request`), so the
table never needs more than one window of nonces.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from metrocloud.grid.errors import NodeUnauthenticated
from metrocloud.store.schema import grid_nonces

__all__ = ["remember_nonce"]


def remember_nonce(
    conn: Connection, sender: str, nonce: str, *, time: int, now: int, window: int
) -> None:
    """Record ``sender``'s ``nonce``; :class:`NodeUnauthenticated` if it was seen already."""
    conn.execute(delete(grid_nonces).where(grid_nonces.c.expires_at < now))
    seen = conn.execute(
        select(grid_nonces.c.expires_at).where(
            grid_nonces.c.node_id == sender, grid_nonces.c.nonce == nonce
        )
    ).first()
    if seen is not None:
        raise NodeUnauthenticated(
            f"nonce {nonce} of node {sender} was used before: a replayed request is refused",
            rule="metrocloud grid request signature v1 (docs/grid.md#transport)",
        )
    conn.execute(
        insert(grid_nonces).values(node_id=sender, nonce=nonce, expires_at=time + window + 1)
    )
