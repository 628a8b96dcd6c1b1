"""Findings of the measurement intake about an instrument (``intake_flags``).

The intake flags an instrument when one of its batches skips counters (``counter-gap``:
batches were lost on the way; the batch is accepted) or reports a software identification
its certificate does not approve (``unapproved-software``: the batch is quarantined). The
flags are instrument data: read by the instrument's readers under the same visibility
rules as the instrument itself, and reads by others land in the owners' access log.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from metrocloud.domain.errors import InvalidInput
from metrocloud.services.common import Actor, Keyset, Page, log_reads
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.services.visibility import check_can_read
from metrocloud.store.schema import intake_flags

__all__ = ["FLAG_KINDS", "flag_out", "list_flags"]

#: what the intake flags, in the order its checks run
FLAG_KINDS = ("counter-gap", "unapproved-software")


def flag_out(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "instrument_id": r.instrument_id,
        "kind": r.kind,
        "detail": r.detail,
        "at": r.at,
    }


def list_flags(
    node: Node,
    actor: Actor,
    instrument_id: str,
    *,
    kind: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """The instrument's flags, oldest first (keyset paging on the flag id)."""
    if kind is not None and kind not in FLAG_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(FLAG_KINDS)}, got {kind!r}")
    keyset = Keyset(intake_flags.c.id, int)
    q = select(intake_flags).where(intake_flags.c.instrument_id == instrument_id)
    if kind is not None:
        q = q.where(intake_flags.c.kind == kind)
    q = keyset.apply(q, limit, cursor)
    with node.db.write() as conn:
        row = instrument_row(conn, instrument_id)
        by_grant = check_can_read(conn, actor, row)
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "flags.read",
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
            via_grant=[row.id] if by_grant else (),
        )
    return Page([flag_out(r) for r in rows], nxt)
