"""Non-compliance notices: an authority's finding about instruments, in the ledger.

A notice is recorded as one ``non_compliance_found`` life-cycle event per instrument
(:func:`metrocloud.services.events.record_events`, one transaction, all or none), whose
``details.notice`` holds the finding, the legal basis, the corrective measures required and
their deadline. Being life-cycle events, notices are read by whoever reads the instrument
(its manufacturer and operator first of all) and every read by another party lands in their
access log.

A notice is *open* until a later ``corrective_action`` event on the same instrument (by its
manufacturer or operator, MID Art. 8(8)) answers it; the first such event closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any, Final

from sqlalchemy import and_, exists, select

from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.instruments import EVENT_RULES, EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.services.common import Actor, Keyset, Page, log_reads, require_role
from metrocloud.services.events import EventDraft, record_events
from metrocloud.services.node import Node
from metrocloud.services.visibility import granted_ids, refuse_node_admin, visible_filter
from metrocloud.store.schema import events, instruments

__all__ = ["NOTICE_RULE", "list_non_compliance", "notify_non_compliance"]

NOTICE_RULE: Final = EVENT_RULES[EventKind.NON_COMPLIANCE_FOUND].rule
_NC = EventKind.NON_COMPLIANCE_FOUND.value
_CA = EventKind.CORRECTIVE_ACTION.value
_MAX_TEXT = 4000
_MAX_MEASURES = 50


def _text(name: str, value: str, limit: int = _MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{name} needs 1 to {limit} characters, got {str(value)[:60]!r}")
    return value.strip()


def notify_non_compliance(
    node: Node,
    actor: Actor,
    instrument_ids: Sequence[str],
    *,
    finding: str,
    measures: Sequence[str],
    legal_basis: str,
    deadline: date,
    reference: str | None = None,
    occurred_at: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Record the notice for each instrument; returns the events with their leaf indexes."""
    require_role(actor, PartyRole.AUTHORITY, action="record non-compliance notices")
    ids = list(instrument_ids)
    if not ids:
        raise InvalidInput("a notice names at least one instrument")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidInput(f"instrument {dup} is named twice in one notice")
    if not measures or len(measures) > _MAX_MEASURES:
        raise InvalidInput(
            f"a notice requires 1 to {_MAX_MEASURES} corrective measures, got {len(measures)}",
            rule=NOTICE_RULE,
        )
    today = node.now().date()
    if deadline <= today:
        raise InvalidInput(
            f"the deadline for the corrective measures must lie after today ({today}), "
            f"got {deadline}",
            rule=NOTICE_RULE,
        )
    notice: dict[str, Any] = {
        "finding": _text("finding", finding),
        "legal_basis": _text("legal_basis", legal_basis, 500),
        "measures": [_text("each measure", m, 1000) for m in measures],
        "deadline": deadline.isoformat(),
    }
    if reference is not None:
        notice["reference"] = _text("reference", reference, 200)
    drafts = [
        EventDraft(
            instrument_id=i,
            kind=EventKind.NON_COMPLIANCE_FOUND,
            occurred_at=occurred_at,
            details={"notice": notice},
        )
        for i in ids
    ]
    recorded = record_events(node, actor, drafts, extra)
    return [{**r, "notice": notice} for r in recorded]


def list_non_compliance(
    node: Node,
    actor: Actor,
    *,
    open_: bool | None = None,
    instrument_id: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """Non-compliance events the actor may read, oldest first; ``open_`` True: only those
    without a later corrective action, False: only answered ones, None: all."""
    refuse_node_admin(actor)
    later = events.alias("later")
    answered = and_(
        later.c.instrument_id == events.c.instrument_id,
        later.c.kind == _CA,
        later.c.seq > events.c.seq,
    )
    closed_by = select(later.c.id).where(answered).order_by(later.c.seq).limit(1).scalar_subquery()
    keyset = Keyset(events.c.id, str)
    with node.db.write() as conn:
        q = (
            select(
                events,
                instruments.c.serial,
                instruments.c.manufacturer_id,
                instruments.c.operator_id,
                closed_by.label("closed_by"),
            )
            .join(instruments, instruments.c.id == events.c.instrument_id)
            .where(events.c.kind == _NC, visible_filter(conn, actor))
        )
        if open_ is True:
            q = q.where(~exists(select(later.c.id).where(answered)))
        elif open_ is False:
            q = q.where(exists(select(later.c.id).where(answered)))
        if instrument_id is not None:
            q = q.where(events.c.instrument_id == instrument_id)
        rows, nxt = keyset.page(conn.execute(keyset.apply(q, limit, cursor)).all(), limit)
        owners = {
            r.instrument_id: SimpleNamespace(
                id=r.instrument_id, manufacturer_id=r.manufacturer_id, operator_id=r.operator_id
            )
            for r in rows
        }
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "non_compliance.read",
            "instrument",
            [(o.id, (o.manufacturer_id, o.operator_id)) for o in owners.values()],
            via_grant=granted_ids(conn, actor, list(owners.values())),
        )
    items = [
        {
            "id": r.id,
            "instrument_id": r.instrument_id,
            "serial": r.serial,
            "manufacturer_id": r.manufacturer_id,
            "operator_id": r.operator_id,
            "occurred_at": r.occurred_at,
            "recorded_by": r.recorded_by,
            "notice": (r.details or {}).get("notice"),
            "details": r.details,
            "open": r.closed_by is None,
            "closed_by": r.closed_by,
            "leaf_index": r.leaf_index,
        }
        for r in rows
    ]
    return Page(items, nxt)
