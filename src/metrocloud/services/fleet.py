"""Monitoring and maintenance as a party sees them: the node's lake engine, the results of
the instruments the party may read, and the access log of what it read.

:func:`detect` and :func:`plan_maintenance` work fleet-wide (the stuck-register detector
compares an instrument with its category's peers), so they always run over every
instrument; only their results are cut to what the caller may read
(:mod:`metrocloud.services.visibility`: the manufacturer and operator their own
instruments, an authority all, a notified body those of its certificates, grantees what
they were granted; the node admin nothing). Every result about an instrument of another
party lands in that party's access log (ARCHITECTURE.md decision 4).

The engine is DuckDB unless the caller brings another (the CLI's ``--engine spark``): one
opened per call over the newest committed snapshot, closed after it. A node whose lake has
no reading yet answers from an empty snapshot (the registry's findings still count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sqlalchemy import select

from metrocloud.lake import Lake, LakeEngine, Manifest, Snapshot, open_engine
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
from metrocloud.services.maintenance import DriftEstimate, plan_maintenance
from metrocloud.services.monitoring import Alert, detect
from metrocloud.services.node import Node
from metrocloud.services.visibility import (
    check_can_read,
    granted_ids,
    refuse_node_admin,
    visible_filter,
)
from metrocloud.store.schema import instruments

__all__ = [
    "alert_json",
    "estimate_json",
    "lake_snapshot",
    "node_engine",
    "party_alerts",
    "party_plan",
]

T = TypeVar("T")


def lake_snapshot(node: Node) -> Snapshot:
    """The newest committed snapshot of the node's lake; empty before the first reading."""
    root = node.settings.lake_path()
    if not (root / MANIFEST_NAME).exists():
        return Snapshot(root.resolve(), Manifest())
    return Lake.open(root).snapshot()


@contextmanager
def node_engine(
    node: Node, engine: str = "duckdb", *, spark_master: str | None = None
) -> Iterator[LakeEngine]:
    """A lake engine (``duckdb`` or ``spark``) over the node's newest snapshot, closed on exit."""
    eng = open_engine(lake_snapshot(node), engine, spark_master=spark_master)
    try:
        yield eng
    finally:
        eng.close()


def _utc(t: datetime | None) -> datetime | None:
    """A time without a zone is UTC (the lake's clock)."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A JSON value: times as RFC 3339 UTC, dates ISO, non-finite numbers as null."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def alert_json(alert: Alert) -> dict[str, Any]:
    """The wire form of an alert (API and ``metrocloud monitor run --json``)."""
    return {
        "instrument": alert.instrument,
        "kind": alert.kind,
        "severity": alert.severity,
        "at": _iso(alert.at),
        "evidence": {k: _plain(v) for k, v in alert.evidence.items()},
    }


def estimate_json(e: DriftEstimate) -> dict[str, Any]:
    """The wire form of a drift estimate (API and ``metrocloud maintenance plan --json``)."""
    return {
        "instrument": e.instrument,
        "drift_percent_per_year": _plain(e.drift_percent_per_year),
        "drift_low": _plain(e.drift_low),
        "drift_high": _plain(e.drift_high),
        "error_percent": _plain(e.error_percent),
        "mpe_percent": _plain(e.mpe_percent),
        "days": e.days,
        "predicted_crossing": _iso(e.predicted_crossing),
        "crossing_earliest": _iso(e.crossing_earliest),
        "recommended_reverification": _plain(e.recommended_reverification),
    }


def _readable(node: Node, actor: Actor, instrument: str | None) -> tuple[dict[str, Any], set[str]]:
    """The instruments ``actor`` may read (id -> row; only ``instrument`` if given, which
    must exist and be readable) and those it reads by grant."""
    refuse_node_admin(actor)
    i = instruments.c
    with node.db.read() as conn:
        if instrument is not None:
            row = instrument_row(conn, instrument)
            return {row.id: row}, ({row.id} if check_can_read(conn, actor, row) else set())
        rows = conn.execute(
            select(i.id, i.manufacturer_id, i.operator_id).where(visible_filter(conn, actor))
        ).all()
        return {r.id: r for r in rows}, granted_ids(conn, actor, list(rows))


def _page(
    items: Sequence[T], key: Callable[[T], list[str]], arity: int, limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """Keyset page of ``items`` (sorted by ``key``, ``arity`` strings) after the cursor's."""
    after = decode_cursor(cursor, *([str] * arity))
    rest = [x for x in items if after is None or key(x) > after]
    if len(rest) <= limit:
        return list(rest), None
    return list(rest[:limit]), encode_cursor(key(rest[limit - 1]))


def _log(
    node: Node,
    actor: Actor,
    action: str,
    ids: Sequence[str],
    readable: dict[str, Any],
    by_grant: set[str],
) -> None:
    seen = list(dict.fromkeys(ids))
    node.access_log.append(
        access_rows(
            actor,
            node.timestamp(),
            action,
            "instrument",
            [(x, (readable[x].manufacturer_id, readable[x].operator_id)) for x in seen],
            via_grant=[x for x in seen if x in by_grant],
        )
    )


def party_alerts(
    node: Node,
    actor: Actor,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    instrument: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
    engine: LakeEngine | None = None,
) -> Page[Alert]:
    """One page of the alerts over [start, end) of the instruments ``actor`` may read (one
    instrument with ``instrument``), by (instrument, kind)."""
    check_limit(limit)
    readable, by_grant = _readable(node, actor, instrument)
    start, end = _utc(start), _utc(end)
    if engine is None:
        with node_engine(node) as eng:
            alerts = detect(node, eng, start=start, end=end)
    else:
        alerts = detect(node, engine, start=start, end=end)
    mine = [a for a in alerts if a.instrument in readable]
    items, nxt = _page(mine, lambda a: [a.instrument, a.kind], 2, limit, cursor)
    _log(node, actor, "alerts.read", [a.instrument for a in items], readable, by_grant)
    return Page(items, nxt)


def party_plan(
    node: Node,
    actor: Actor,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    instrument: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
    engine: LakeEngine | None = None,
) -> Page[DriftEstimate]:
    """One page of the drift estimates (predictive maintenance) over [start, end) of the
    instruments ``actor`` may read, by instrument."""
    check_limit(limit)
    readable, by_grant = _readable(node, actor, instrument)
    start, end = _utc(start), _utc(end)
    if engine is None:
        with node_engine(node) as eng:
            plan = plan_maintenance(node, eng, start=start, end=end)
    else:
        plan = plan_maintenance(node, engine, start=start, end=end)
    mine = [e for e in plan if e.instrument in readable]
    items, nxt = _page(mine, lambda e: [e.instrument], 1, limit, cursor)
    _log(node, actor, "maintenance.read", [e.instrument for e in items], readable, by_grant)
    return Page(items, nxt)
