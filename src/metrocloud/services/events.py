"""Life-cycle events of instruments: append (one or many) and list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from metrocloud.domain.errors import Forbidden, InvalidInput
from metrocloud.domain.instruments import (
    EVENT_RULES,
    EventKind,
    LifeCycleState,
    apply_event,
    validate_nuts,
)
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import SoftwareIdentification
from metrocloud.services.common import (
    Actor,
    Keyset,
    Page,
    article,
    log_reads,
    require_role,
)
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.services.visibility import check_can_read
from metrocloud.store.ids import new_ids
from metrocloud.store.schema import certificates, events
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "EVENT_WRITERS",
    "EventDraft",
    "check_may_write_events",
    "list_events",
    "record_events",
]

#: roles that may record some event at all (checked before a request body is read)
EVENT_WRITERS = (PartyRole.MANUFACTURER, PartyRole.OPERATOR, PartyRole.AUTHORITY)


@dataclass(frozen=True, kw_only=True, slots=True)
class EventDraft:
    instrument_id: str
    kind: EventKind
    occurred_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def _relationship_error(actor: Actor, row: Any, operator: str | None) -> Forbidden | None:
    if actor.role is PartyRole.AUTHORITY:
        return None
    if actor.role is PartyRole.MANUFACTURER and row.manufacturer_id == actor.party_id:
        return None
    if actor.role is PartyRole.OPERATOR and operator in (None, actor.party_id):
        return None
    return Forbidden(
        f"{actor.party_id} may not record events for instrument {row.id}: only its "
        "manufacturer, its operator and authorities may",
        rule="metrocloud role rules (docs/concepts.md#roles)",
    )


def check_may_write_events(node: Node, actor: Actor, instrument_id: str) -> None:
    """Authorization that does not depend on the request body."""
    require_role(actor, *EVENT_WRITERS, action="record life-cycle events")
    with node.db.read() as conn:
        row = instrument_row(conn, instrument_id)
    err = _relationship_error(actor, row, row.operator_id)
    if err:
        raise err


def _details(kind: EventKind, details: Mapping[str, Any], cert: Any) -> dict[str, Any]:
    out = dict(details)
    if kind in (EventKind.PUT_INTO_SERVICE, EventKind.RELOCATED):
        if "region" in out:
            validate_nuts(str(out["region"]))
        elif kind is EventKind.RELOCATED:
            raise InvalidInput("relocated needs details.region (the new NUTS region)")
    if kind is EventKind.VERIFIED:
        try:
            date.fromisoformat(str(out.get("verified_until")))
        except ValueError as exc:
            raise InvalidInput(
                "verified needs details.verified_until as an ISO date (YYYY-MM-DD)"
            ) from exc
    if kind is EventKind.SOFTWARE_UPDATED:
        sw_raw = out.get("software")
        if not isinstance(sw_raw, Mapping):
            raise InvalidInput(
                "software_updated needs details.software {name, version, algorithm, checksum}"
            )
        try:
            sw = SoftwareIdentification(**sw_raw)
        except TypeError as exc:
            raise InvalidInput(
                "details.software needs exactly name, version, algorithm and checksum"
            ) from exc
        approved = [SoftwareIdentification(**s) for s in cert.software]
        out["software"] = sw.as_dict()
        out["approved"] = sw in approved
    return out


_MAX_FUTURE = timedelta(minutes=5)


def _occurred_at(node: Node, d: EventDraft) -> str:
    """When the event happened: given (timezone-aware, not in the future) or now."""
    if d.occurred_at is None:
        return node.timestamp()
    if d.occurred_at.tzinfo is None:
        raise InvalidInput("occurred_at needs a timezone (RFC 3339, e.g. 2026-11-24T10:00:00Z)")
    if d.occurred_at > node.now() + _MAX_FUTURE:
        raise InvalidInput(
            f"occurred_at {d.occurred_at.isoformat()} is in the future (node time "
            f"{node.timestamp()}); events are recorded after they happen"
        )
    return utc_timestamp(d.occurred_at)


def record_events(
    node: Node, actor: Actor, drafts: Sequence[EventDraft], extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Record events in one transaction: all, or none."""
    require_role(actor, *EVENT_WRITERS, action="record life-cycle events")
    if not drafts:
        raise InvalidInput("no events to record")
    if len(drafts) > node.settings.max_batch:
        raise InvalidInput(f"at most {node.settings.max_batch} events at once, got {len(drafts)}")
    ids = new_ids("evt", node.country, len(drafts))
    statements = []
    out: list[dict[str, Any]] = []
    with node.db.write() as conn:
        states: dict[str, tuple[LifeCycleState, str | None]] = {}
        for eid, d in zip(ids, drafts, strict=True):
            row = instrument_row(conn, d.instrument_id)
            state, operator = states.get(row.id, (LifeCycleState(row.state), row.operator_id))
            err = _relationship_error(actor, row, operator)
            if err:
                raise err
            if (
                actor.role is PartyRole.OPERATOR
                and operator is None
                and d.kind is not EventKind.PUT_INTO_SERVICE
            ):
                raise Forbidden(
                    f"instrument {row.id} has no operator yet: an operator may only put it into "
                    f"service, not record {d.kind}",
                    rule="metrocloud role rules (docs/concepts.md#roles)",
                )
            if actor.role not in EVENT_RULES[d.kind].roles:
                allowed = ", ".join(sorted(EVENT_RULES[d.kind].roles))
                raise Forbidden(
                    f"{article(actor.role.value)} may not record {d.kind}; only {allowed} may",
                    rule=EVENT_RULES[d.kind].rule,
                )
            new_state = apply_event(state, d.kind, actor.role)
            if d.kind is EventKind.PUT_INTO_SERVICE:
                operator = actor.party_id
            states[row.id] = (new_state, operator)
            cert = conn.execute(
                select(certificates.c.software).where(certificates.c.id == row.certificate_id)
            ).one()
            at = _occurred_at(node, d)
            body = {
                "event": {
                    "id": eid,
                    "instrument_id": row.id,
                    "kind": d.kind.value,
                    "occurred_at": at,
                    "details": _details(d.kind, d.details, cert),
                }
            }
            statements.append(
                node.statement(
                    kind="instrument.event", signer=actor.party_id, body=body, extra=extra
                )
            )
            out.append(
                {
                    "id": eid,
                    "instrument_id": row.id,
                    "kind": d.kind.value,
                    "occurred_at": at,
                    "state_after": new_state.value,
                }
            )
        rec = node.commit(conn, statements)
    for o, leaf in zip(out, rec.leaf_indexes, strict=True):
        o["leaf_index"] = leaf
    return out


def event_out(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "instrument_id": r.instrument_id,
        "seq": r.seq,
        "kind": r.kind,
        "occurred_at": r.occurred_at,
        "recorded_by": r.recorded_by,
        "details": r.details,
        "state_after": r.state_after,
        "leaf_index": r.leaf_index,
    }


def list_events(
    node: Node, actor: Actor, instrument_id: str, *, limit: int = 100, cursor: str | None = None
) -> Page[dict[str, Any]]:
    keyset = Keyset(events.c.seq, int)
    q = keyset.apply(select(events).where(events.c.instrument_id == instrument_id), limit, cursor)
    with node.db.write() as conn:
        row = instrument_row(conn, instrument_id)
        by_grant = check_can_read(conn, actor, row)
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "events.read",
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
            via_grant=[row.id] if by_grant else (),
        )
    return Page([event_out(r) for r in rows], nxt)
