"""Grants of read access, and the access log each party reads for its own records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select, update

from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services.common import (
    Actor,
    Keyset,
    Page,
    require_role,
)
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.store.schema import access_log, grants, instruments, parties

__all__ = ["create_grant", "list_access_log", "list_grants", "revoke_grant"]


def _grant_out(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "owner_id": r.owner_id,
        "grantee_id": r.grantee_id,
        "instrument_id": r.instrument_id,
        "created_at": r.created_at,
        "revoked_at": r.revoked_at,
    }


def create_grant(
    node: Node, actor: Actor, *, grantee_id: str, instrument_id: str | None
) -> dict[str, Any]:
    require_role(
        actor,
        PartyRole.MANUFACTURER,
        PartyRole.OPERATOR,
        action="grant read access (only owners of instrument data grant)",
    )
    if grantee_id == actor.party_id:
        raise InvalidInput("a party cannot grant access to itself")
    with node.db.write() as conn:
        if conn.execute(select(parties.c.id).where(parties.c.id == grantee_id)).first() is None:
            raise NotFound(f"party {grantee_id} does not exist")
        if instrument_id is not None:
            row = conn.execute(
                select(instruments.c.manufacturer_id, instruments.c.operator_id).where(
                    instruments.c.id == instrument_id
                )
            ).first()
            if row is None:
                raise NotFound(f"instrument {instrument_id} does not exist")
            if actor.party_id not in (row.manufacturer_id, row.operator_id):
                raise Forbidden(
                    f"only the manufacturer or operator of {instrument_id} may grant access to it"
                )
        gid = new_id("grt", node.country)
        conn.execute(
            insert(grants).values(
                id=gid,
                owner_id=actor.party_id,
                grantee_id=grantee_id,
                instrument_id=instrument_id,
                created_at=node.timestamp(),
            )
        )
        return _grant_out(conn.execute(select(grants).where(grants.c.id == gid)).one())


def list_grants(
    node: Node, actor: Actor, *, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    keyset = Keyset(grants.c.id)
    q = keyset.apply(
        select(grants).where(
            or_(grants.c.owner_id == actor.party_id, grants.c.grantee_id == actor.party_id)
        ),
        limit,
        cursor,
    )
    with node.db.read() as conn:
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
    return Page([_grant_out(r) for r in rows], nxt)


def revoke_grant(node: Node, actor: Actor, grant_id: str) -> dict[str, Any]:
    with node.db.write() as conn:
        r = conn.execute(select(grants).where(grants.c.id == grant_id)).first()
        if r is None:
            raise NotFound(f"grant {grant_id} does not exist")
        if r.owner_id != actor.party_id:
            raise Forbidden("only the party that gave a grant may revoke it")
        if r.revoked_at is None:
            conn.execute(
                update(grants).where(grants.c.id == grant_id).values(revoked_at=node.timestamp())
            )
        return _grant_out(conn.execute(select(grants).where(grants.c.id == grant_id)).one())


def list_access_log(
    node: Node, actor: Actor, *, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Reads of ``actor``'s records by other parties, newest first."""
    keyset = Keyset(access_log.c.id, int, descending=True)
    q = keyset.apply(
        select(access_log).where(access_log.c.owner_id == actor.party_id), limit, cursor
    )
    with node.db.read() as conn:
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
    return Page(
        [
            {
                "id": r.id,
                "at": r.at,
                "reader_id": r.reader_id,
                "reader_role": r.reader_role,
                "action": r.action,
                "resource_type": r.resource_type,
                "resource_id": r.resource_id,
                "via_grant": r.via_grant,
            }
            for r in rows
        ],
        nxt,
    )
