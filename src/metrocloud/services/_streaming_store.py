"""The streaming monitor's tables (store/schema.py, migration 0009): register state, alerts
and the segments taken in, read and written with SQLAlchemy Core on SQLite and PostgreSQL.

Writes are upserts (``INSERT ... ON CONFLICT DO UPDATE``, which both databases have), one
statement for many rows; reads of the state go by primary key in chunks, so a segment of
10^5 registers is a few hundred round trips, not one per register.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
from sqlalchemy import Connection, Table, and_, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from metrocloud.services._streaming_compute import NO_READING, Finding, Floats, Int64s
from metrocloud.store.schema import stream_alerts, stream_segments, stream_state

__all__ = [
    "AlertRow",
    "iso_ms",
    "load_alerts",
    "load_state",
    "merge_alert",
    "ms_of",
    "save_alerts",
    "save_segment",
    "save_state",
    "segment_seen",
    "select_alerts",
]

#: registers per state query (two bound parameters each)
_CHUNK: Final = 1000

#: a stream_alerts row as a mapping of its columns
AlertRow = dict[str, Any]


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, ``Z``: sortable as text."""
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_of(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def merge_alert(old: AlertRow | None, f: Finding, segment: str, now: str) -> AlertRow:
    """The alert row after finding ``f`` in ``segment``: the first evidence is the earlier
    one's, counts and decreases add up, the longest gap is the longer."""
    new_ev: dict[str, Any] = {"quantity": f.quantity, **f.evidence}
    if old is None:
        return {
            "instrument": f.instrument,
            "kind": f.kind,
            "severity": f.severity,
            "at": iso_ms(f.at),
            "last_at": iso_ms(f.last),
            "count": f.count,
            "evidence": new_ev,
            "raised_at": now,
            "updated_at": now,
            "segment": segment,
        }
    old_ev = dict(old["evidence"])
    old_at = ms_of(old["at"])
    evidence = dict(new_ev if f.at < old_at else old_ev)
    if "total_decrease" in evidence:
        evidence["total_decrease"] = old_ev["total_decrease"] + new_ev["total_decrease"]
    if "longest_s" in evidence:
        evidence["longest_s"] = max(old_ev["longest_s"], new_ev["longest_s"])
    return {
        **old,
        "at": iso_ms(min(f.at, old_at)),
        "last_at": iso_ms(max(f.last, ms_of(old["last_at"]))),
        "count": int(old["count"]) + f.count,
        "evidence": evidence,
        "updated_at": now,
    }


def _upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    conn.execute(stmt, list(rows))


def segment_seen(conn: Connection, segment: str) -> bool:
    found = conn.execute(
        select(stream_segments.c.segment).where(stream_segments.c.segment == segment)
    ).first()
    return found is not None


def save_segment(
    conn: Connection, segment: str, *, readings: int, late: int, alerts: int, at: str
) -> None:
    conn.execute(
        stream_segments.insert().values(
            segment=segment, readings=readings, late=late, alerts=alerts, observed_at=at
        )
    )


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def load_state(conn: Connection, keys: Sequence[tuple[str, str]]) -> tuple[Int64s, Floats]:
    """Each register's last reading (time ms, value); :data:`NO_READING` / NaN if none.

    On the driver's cursor, by instrument (the key's first column, so an index range per
    instrument): SQLAlchemy's statement building for 10^5 keys would cost more than the
    database's work."""
    where = {k: i for i, k in enumerate(keys)}
    last_t = np.full(len(keys), NO_READING, dtype=np.int64)
    last_v = np.full(len(keys), np.nan, dtype=np.float64)
    quote, mark = conn.dialect.identifier_preparer.quote, _mark(conn)
    names = sorted({k[0] for k in keys})
    head = (
        f"SELECT instrument, quantity, last_t, last_value FROM {quote(stream_state.name)} "  # noqa: S608
        "WHERE instrument IN "
    )
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for lo in range(0, len(names), _CHUNK):
            part = names[lo : lo + _CHUNK]
            cursor.execute(head + "(" + ", ".join([mark] * len(part)) + ")", part)
            for instrument, quantity, t, v in cursor.fetchall():
                i = where.get((instrument, quantity))
                if i is not None:
                    last_t[i], last_v[i] = t, v
    finally:
        cursor.close()
    return last_t, last_v


def save_state(
    conn: Connection, keys: Sequence[tuple[str, str]], last_t: Int64s, last_v: Floats
) -> None:
    """Upsert the registers' new state in one driver-level ``executemany``."""
    if not keys:
        return
    quote, mark = conn.dialect.identifier_preparer.quote, _mark(conn)
    sql = (
        f"INSERT INTO {quote(stream_state.name)} (instrument, quantity, last_t, last_value) "  # noqa: S608
        f"VALUES ({mark}, {mark}, {mark}, {mark}) ON CONFLICT (instrument, quantity) "
        "DO UPDATE SET last_t = excluded.last_t, last_value = excluded.last_value"
    )
    rows = [
        (k[0], k[1], t, v) for k, t, v in zip(keys, last_t.tolist(), last_v.tolist(), strict=True)
    ]
    conn.exec_driver_sql(sql, rows)


def load_alerts(
    conn: Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], AlertRow]:
    wanted = sorted(set(pairs))
    out: dict[tuple[str, str], AlertRow] = {}
    a = stream_alerts.c
    for lo in range(0, len(wanted), _CHUNK):
        part = wanted[lo : lo + _CHUNK]
        for row in conn.execute(
            select(stream_alerts).where(tuple_(a.instrument, a.kind).in_(part))
        ):
            out[(row.instrument, row.kind)] = dict(row._mapping)
    return out


def save_alerts(conn: Connection, rows: Sequence[AlertRow]) -> None:
    _upsert(conn, stream_alerts, rows)


def select_alerts(where: Any, after: Sequence[str] | None, limit: int, *extra: Any) -> Any:
    """The alerts matching ``where`` after the keyset ``after`` (instrument, kind), in that
    order, at most ``limit``; ``extra`` columns are selected along."""
    a = stream_alerts.c
    stmt = select(stream_alerts, *extra).where(where)
    if after is not None:
        stmt = stmt.where(
            or_(a.instrument > after[0], and_(a.instrument == after[0], a.kind > after[1]))
        )
    return stmt.order_by(a.instrument, a.kind).limit(limit)
