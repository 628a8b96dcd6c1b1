"""The engine queries behind monitoring: reference pairs, flat runs, grid offsets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake import DuckDBEngine, Lake
from tests.lake._support import T0, Row, table

Q = "1-0:1.8.0"
REF = Q + "*ref"
STEP = timedelta(minutes=15)


def _rows() -> list[Row]:
    rows: list[Row] = []
    # A1: 2 days of quarter hours, +1 each; a reference reading 1 ms after each day's last
    for k in range(2 * 96):
        rows.append(("A1", "MI-003", T0 + k * STEP, Q, 100.0 + k))
    for day in range(2):
        last = T0 + (96 * (day + 1) - 1) * STEP
        rows.append(("A1", "MI-003", last + timedelta(milliseconds=1), REF, 200.0 + 96 * day))
    # B2: flat from reading 10 to 29 (20 readings, 4 h 45 min), and 2.5 s late on day 2
    for k in range(2 * 96):
        t = T0 + k * STEP + (timedelta(milliseconds=2500) if k >= 96 else timedelta(0))
        rows.append(("B2", "MI-003", t, Q, 50.0 + min(k, 10) + max(0, k - 29)))
    return rows


@pytest.fixture
def engine(tmp_path: Path) -> DuckDBEngine:
    rows = _rows()
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("one", table(rows[::2]))
        lake.write_segment("two", table(rows[1::2]))
    return DuckDBEngine(Lake.open(tmp_path), threads=1)


def test_reference_pairs_join_the_register_reading_at_or_before(engine: DuckDBEngine) -> None:
    got = engine.reference_pairs().to_pylist()
    assert [(r["instrument"], r["quantity"], r["reference"], r["register"]) for r in got] == [
        ("A1", Q, 200.0, 195.0),
        ("A1", Q, 296.0, 291.0),
    ]
    assert got[0]["t"] == T0 + 95 * STEP + timedelta(milliseconds=1)
    # the window applies to both sides; a window without references is empty
    assert engine.reference_pairs(T0 + timedelta(days=1)).num_rows == 1
    assert engine.reference_pairs(category="MI-001").num_rows == 0


def test_flat_runs_are_maximal_and_filtered_by_duration(engine: DuckDBEngine) -> None:
    got = engine.flat_runs(min_duration=timedelta(hours=1)).to_pylist()
    assert [(r["instrument"], r["readings"], r["value"]) for r in got] == [("B2", 20, 60.0)]
    assert got[0]["first_t"] == T0 + 10 * STEP
    assert got[0]["last_t"] == T0 + 29 * STEP
    assert engine.flat_runs(min_duration=timedelta(hours=5)).num_rows == 0
    # every reading is a run of its own otherwise; reference quantities are left out
    everything = engine.flat_runs(min_duration=timedelta(0))
    assert sum(everything["readings"].to_pylist()) == 4 * 96
    with pytest.raises(InvalidInput):
        engine.flat_runs(min_duration=timedelta(-1))


def test_grid_offsets_per_day(engine: DuckDBEngine) -> None:
    got = engine.grid_offsets().to_pylist()
    rows = [(r["instrument"], r["readings"], r["off_grid"], r["median_offset_ms"]) for r in got]
    assert rows == [
        ("A1", 96, 0, 0.0),
        ("A1", 96, 0, 0.0),
        ("B2", 96, 0, 0.0),
        ("B2", 96, 96, 2500.0),
    ]
    # a late clock is a negative offset from the next grid point of a coarse grid...
    late = engine.grid_offsets(grid=timedelta(seconds=3)).to_pylist()[-1]
    assert late["median_offset_ms"] == -500.0
    # ... and off the whole-second grid
    assert engine.grid_offsets(grid=timedelta(seconds=1)).to_pylist()[-1]["off_grid"] == 96
    with pytest.raises(InvalidInput):
        engine.grid_offsets(grid=timedelta(0))
