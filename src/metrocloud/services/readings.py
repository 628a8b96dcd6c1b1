"""An instrument's signed measurements, read from the lake for a party that may read it.

The instrument's administrative shell links here from its TimeSeries submodel (IDTA 02008).
The same rules as the instrument record (:mod:`metrocloud.services.visibility`), and the
same access log: a read by anyone but the manufacturer or operator lands in their log.
Pages are keyset pages on (quantity, t) inside the lake engine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.lake.manifest import MANIFEST_NAME
from metrocloud.services.common import (
    Actor,
    Page,
    access_rows,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.services.visibility import check_can_read, refuse_node_admin

__all__ = ["instrument_measurements"]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc(t: datetime | None) -> datetime | None:
    """A time without a zone is UTC (the lake's clock)."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def instrument_measurements(
    node: Node,
    actor: Actor,
    instrument_id: str,
    *,
    quantity: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """One page of the instrument's readings in [start, end), by quantity then time."""
    check_limit(limit)
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"end {_iso(end)} must be after start {_iso(start)}")
    after = None
    if cursor is not None:
        key = decode_cursor(cursor, str, int)
        if key is not None:
            after = (key[0], datetime.fromtimestamp(key[1] / 1000, UTC))
    refuse_node_admin(actor)
    with node.db.read() as conn:
        row = instrument_row(conn, instrument_id)
        by_grant = check_can_read(conn, actor, row)
    rows = _read(node, instrument_id, quantity, start, end, after, limit + 1)
    node.access_log.append(
        access_rows(
            actor,
            node.timestamp(),
            "measurements.read",
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
            via_grant=[row.id] if by_grant else (),
        )
    )
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        nxt = encode_cursor([last["quantity"], int(last["t"].timestamp() * 1000)])
    items = [
        {
            "t": _iso(r["t"]),
            "quantity": r["quantity"],
            "value": r["value"],
            "unit": r["unit"],
            "status": r["status"],
            "batch_counter": r["batch_counter"],
        }
        for r in rows
    ]
    return Page(items, nxt)


def _read(
    node: Node,
    instrument_id: str,
    quantity: str | None,
    start: datetime | None,
    end: datetime | None,
    after: tuple[str, datetime] | None,
    limit: int,
) -> list[dict[str, Any]]:
    root = node.settings.lake_path()
    if not (root / MANIFEST_NAME).exists():  # no reading has arrived yet
        return []
    lake = Lake.open(root)
    engine = DuckDBEngine(lake.snapshot(), memory_limit="512MiB", threads=1)
    try:
        table = engine.instrument_readings(
            instrument_id, quantity, start, end, after=after, limit=limit
        )
    finally:
        engine.close()
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows
