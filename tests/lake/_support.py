"""Helpers for the lake tests: readings tables from plain rows, and reading a lake back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from metrocloud.lake import DuckDBEngine, Lake

T0 = datetime(2026, 3, 1, tzinfo=UTC)

INPUT_SCHEMA = pa.schema(
    [
        ("instrument", pa.string()),
        ("category", pa.string()),
        ("t", pa.timestamp("ms", tz="UTC")),
        ("quantity", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("status", pa.int32()),
        ("batch_counter", pa.int64()),
        ("seq", pa.int32()),
        ("ingested_at", pa.timestamp("ms", tz="UTC")),
    ]
)

Row = tuple[str, str, datetime, str, float]  # instrument, category, t, quantity, value


def table(rows: Iterable[Row]) -> pa.Table:
    rows = list(rows)
    cols: dict[str, list[Any]] = {name: [] for name in INPUT_SCHEMA.names}
    for n, (instrument, category, t, quantity, value) in enumerate(rows):
        cols["instrument"].append(instrument)
        cols["category"].append(category)
        cols["t"].append(t)
        cols["quantity"].append(quantity)
        cols["value"].append(value)
        cols["unit"].append("kWh")
        cols["status"].append(0)
        cols["batch_counter"].append(n // 4)
        cols["seq"].append(n % 4)
        cols["ingested_at"].append(t + timedelta(seconds=1))
    return pa.table(cols, schema=INPUT_SCHEMA)


def grid(
    instruments: Sequence[str] = ("A1", "B2", "C3"),
    days: int = 3,
    per_day: int = 24,
    category: str = "MI-003",
    quantity: str = "1-0:1.8.0",
) -> list[Row]:
    step = timedelta(days=1) / per_day
    out = []
    for i, ins in enumerate(instruments):
        for k in range(days * per_day):
            out.append((ins, category, T0 + k * step, quantity, 100.0 * i + 0.5 * k))
    return out


def visible(root: Path) -> list[tuple[Any, ...]]:
    """Every visible reading of the lake at ``root``, as sorted key/value tuples."""
    with DuckDBEngine(Lake.open(root), memory_limit="256MiB", threads=1) as engine:
        got = engine.sql(
            "SELECT instrument, category, day, t, quantity, value FROM readings "
            "ORDER BY instrument, quantity, t"
        )
    return [tuple(r.values()) for r in got.to_pylist()]


def expected(rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    return sorted(
        ((i, c, t.astimezone(UTC).date(), t, q, v) for i, c, t, q, v in rows),
        key=lambda r: (r[0], r[4], r[3]),
    )
