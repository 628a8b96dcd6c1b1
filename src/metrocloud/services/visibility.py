"""Who may read an instrument (ARCHITECTURE.md decision 4).

- the manufacturer that registered it (its owner),
- the operator that put it into service,
- any market surveillance / verification authority of the node,
- the notified body that issued its certificate,
- any party the owner or operator granted read access to (one instrument or all of theirs).

The node admin runs the platform; it reads no instrument data. Every read by a party other
than the owner and operator lands in their access logs (:func:`log_reads`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, false, or_, select, true

from metrocloud.domain.errors import Forbidden
from metrocloud.domain.parties import PartyRole
from metrocloud.services.common import Actor
from metrocloud.store.schema import certificates, grants, instruments

__all__ = ["GRANT_RULE", "check_can_read", "granted_ids", "refuse_node_admin", "visible_filter"]

GRANT_RULE = "ARCHITECTURE.md decision 4 (data sovereignty)"


def _grant_rows(conn: Connection, actor: Actor) -> list[Any]:
    return list(
        conn.execute(
            select(grants.c.owner_id, grants.c.instrument_id).where(
                grants.c.grantee_id == actor.party_id, grants.c.revoked_at.is_(None)
            )
        ).all()
    )


def visible_filter(conn: Connection, actor: Actor) -> ColumnElement[bool]:
    """A WHERE clause on ``instruments`` selecting what ``actor`` may read."""
    i = instruments.c
    if actor.role is PartyRole.AUTHORITY:
        return true()
    own: list[ColumnElement[bool]] = []
    if actor.role is PartyRole.MANUFACTURER:
        own.append(i.manufacturer_id == actor.party_id)
    elif actor.role is PartyRole.OPERATOR:
        own.append(i.operator_id == actor.party_id)
    elif actor.role is PartyRole.NOTIFIED_BODY:
        own.append(
            i.certificate_id.in_(
                select(certificates.c.id)
                .where(certificates.c.notified_body_id == actor.party_id)
                .scalar_subquery()
            )
        )
    rows = _grant_rows(conn, actor)
    whole = [r.owner_id for r in rows if r.instrument_id is None]
    single = [r.instrument_id for r in rows if r.instrument_id is not None]
    if whole:
        own.append(i.manufacturer_id.in_(whole))
        own.append(i.operator_id.in_(whole))
    if single:
        own.append(i.id.in_(single))
    return or_(*own) if own else false()


def granted_ids(conn: Connection, actor: Actor, rows: list[Any]) -> set[str]:
    """Ids among ``rows`` that ``actor`` reads only by virtue of a grant."""
    if actor.role is PartyRole.AUTHORITY or not rows:
        return set()
    grants_ = _grant_rows(conn, actor)
    whole = {g.owner_id for g in grants_ if g.instrument_id is None}
    single = {g.instrument_id for g in grants_ if g.instrument_id is not None}
    out = set()
    for r in rows:
        direct = actor.party_id in (r.manufacturer_id, r.operator_id)
        if not direct and (r.id in single or r.manufacturer_id in whole or r.operator_id in whole):
            out.add(r.id)
    return out


def refuse_node_admin(actor: Actor) -> None:
    """The node admin runs the platform and reads no instrument data."""
    if actor.role is PartyRole.NODE_ADMIN:
        raise Forbidden("the node admin reads no instrument data", rule=GRANT_RULE)


def check_can_read(conn: Connection, actor: Actor, row: Any) -> bool:
    """True if readable; returns whether the read is by grant. Raises :class:`Forbidden`."""
    if actor.role is PartyRole.AUTHORITY:
        return False
    if actor.party_id in (row.manufacturer_id, row.operator_id):
        return False
    if actor.role is PartyRole.NOTIFIED_BODY:
        nb = conn.execute(
            select(certificates.c.notified_body_id).where(certificates.c.id == row.certificate_id)
        ).scalar_one()
        if nb == actor.party_id:
            return False
    if row.id in granted_ids(conn, actor, [row]):
        return True
    raise Forbidden(
        f"{actor.party_id} has no right to read instrument {row.id}: it is neither "
        "its manufacturer, operator, certifying notified body or an authority, "
        "and holds no grant",
        rule=GRANT_RULE,
    )
