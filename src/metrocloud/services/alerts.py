"""Alerts: what one member state tells all the others (the grid's alert board).

A market-surveillance authority raises an alert about an instrument, a type (certificate)
or a party that presents a risk (Regulation (EU) 2019/1020 Art. 20; ICSMS and Safety Gate
do this today). The alert is a signed ``alert.raised`` statement: it enters this node's log
and is replicated to every node of the grid (:mod:`metrocloud.services._federation_replication`).
The board (``alerts``) also shows other nodes' non-compliance notices and the split views
found by witnessing (:mod:`metrocloud.services._federation_witness`).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import select

from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.services.common import Actor, Keyset, Page, require_role
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id, parse_id
from metrocloud.store.schema import alerts

__all__ = [
    "ALERT_RULE",
    "SEVERITIES",
    "SUBJECT_TYPES",
    "alert_out",
    "list_alerts",
    "raise_alert",
]

ALERT_RULE: Final = "Regulation (EU) 2019/1020 Art. 20 (products presenting a serious risk)"
SEVERITIES: Final = ("low", "medium", "high", "serious")
#: what an alert is about, and the id kind that names it
SUBJECT_TYPES: Final = {"instrument": "ins", "certificate": "cer", "party": "pty"}
BOARD_KINDS: Final = ("market_surveillance", "non_compliance", "split_view")


def _text(name: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{name} needs 1 to {limit} characters, got {str(value)[:60]!r}")
    return value.strip()


def alert_out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "origin_node_id": row.origin_node_id,
        "country": row.country,
        "raised_by": row.raised_by,
        "raised_at": row.raised_at,
        "subject_type": row.subject_type,
        "subject_id": row.subject_id,
        "severity": row.severity,
        "title": row.title,
        "details": row.details,
        "leaf_index": row.leaf_index,
    }


def raise_alert(
    node: Node,
    actor: Actor,
    *,
    subject_type: str,
    subject_id: str,
    severity: str,
    title: str,
    description: str,
    measures: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An authority's market-surveillance alert, signed, logged and sent to every node."""
    require_role(actor, PartyRole.AUTHORITY, action="raise market-surveillance alerts")
    if subject_type not in SUBJECT_TYPES:
        raise InvalidInput(
            f"an alert is about one of {sorted(SUBJECT_TYPES)}, got {subject_type!r}"
        )
    parse_id(subject_id, SUBJECT_TYPES[subject_type])
    if severity not in SEVERITIES:
        raise InvalidInput(
            f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}", rule=ALERT_RULE
        )
    ms = [_text("each measure", m, 1000) for m in (measures or [])]
    if len(ms) > 50:
        raise InvalidInput(f"an alert lists at most 50 measures, got {len(ms)}")
    alert = {
        "id": new_id("alt", node.country),
        "kind": "market_surveillance",
        "origin_node_id": node.node_id,
        "country": node.country,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "severity": severity,
        "title": _text("title", title, 300),
        "details": {"description": _text("description", description, 4000), "measures": ms},
    }
    with node.db.write() as conn:
        node.commit(
            conn,
            [
                node.statement(
                    kind="alert.raised", signer=actor.party_id, body={"alert": alert}, extra=extra
                )
            ],
        )
        row = conn.execute(select(alerts).where(alerts.c.id == alert["id"])).one()
    return alert_out(row)


def list_alerts(
    node: Node,
    actor: Actor,
    *,
    kind: str | None = None,
    subject_id: str | None = None,
    country: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """The alert board, the latest to arrive here first: alerts are for every party."""
    if kind is not None and kind not in BOARD_KINDS:
        raise InvalidInput(f"alert kind must be one of {', '.join(BOARD_KINDS)}, got {kind!r}")
    keyset = Keyset(alerts.c.leaf_index, int, descending=True)
    q = select(alerts)
    if kind is not None:
        q = q.where(alerts.c.kind == kind)
    if subject_id is not None:
        q = q.where(alerts.c.subject_id == subject_id)
    if country is not None:
        q = q.where(alerts.c.country == country)
    with node.db.read() as conn:
        rows, nxt = keyset.page(conn.execute(keyset.apply(q, limit, cursor)).all(), limit)
    return Page([alert_out(r) for r in rows], nxt)
