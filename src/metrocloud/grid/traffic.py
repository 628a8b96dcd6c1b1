"""The record of node-to-node traffic: every request sent or received, with its bodies.

What crossed the border is evidence: a member state can show which data left its node and
when (for federated statistics: aggregates only). Bodies are kept when the setting
``grid_traffic_bodies`` is on (the default), for ``grid_traffic_retention_days``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, update
from sqlalchemy.exc import IntegrityError

from metrocloud.store.schema import grid_peer_status, grid_traffic

__all__ = ["Exchange", "prune_traffic", "record_contact", "record_traffic"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Exchange:
    """One request and its answer, as one node saw it."""

    direction: str  # "out": this node asked; "in": a peer asked this node
    peer_id: str
    method: str
    path: str
    status: int  # 0: no answer (the peer could not be reached)
    request_body: bytes
    response_body: bytes


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def record_traffic(conn: Connection, exchange: Exchange, *, at: str, keep_bodies: bool) -> None:
    e = exchange
    conn.execute(
        insert(grid_traffic).values(
            at=at,
            direction=e.direction,
            peer_id=e.peer_id,
            method=e.method,
            path=e.path[:500],
            status=e.status,
            request_bytes=len(e.request_body),
            response_bytes=len(e.response_body),
            request_sha256=hashlib.sha256(e.request_body).hexdigest(),
            request_body=_text(e.request_body) if keep_bodies else None,
            response_body=_text(e.response_body) if keep_bodies else None,
        )
    )


def prune_traffic(conn: Connection, before: str) -> int:
    """Drop the records older than ``before`` (a timestamp); returns how many."""
    return conn.execute(delete(grid_traffic).where(grid_traffic.c.at < before)).rowcount or 0


def record_contact(
    conn: Connection, peer_id: str, *, at: str, error: str | None, delivered: bool = False
) -> None:
    """The link status of ``peer_id``: the last answer, the last delivery, the last error."""
    values: dict[str, str | None] = (
        {"last_error_at": at, "last_error": error} if error else {"last_contact_at": at}
    )
    if delivered:
        values["last_delivery_at"] = at
    done = conn.execute(
        update(grid_peer_status).where(grid_peer_status.c.node_id == peer_id).values(**values)
    ).rowcount
    if not done:
        try:
            with conn.begin_nested():  # a concurrent first contact may have inserted it
                conn.execute(insert(grid_peer_status).values(node_id=peer_id, **values))
        except IntegrityError:
            conn.execute(
                update(grid_peer_status)
                .where(grid_peer_status.c.node_id == peer_id)
                .values(**values)
            )
