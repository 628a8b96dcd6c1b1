"""DuckDB's one-pass ``monitoring_inputs`` answers exactly what the five queries answer.

The pass (lake/_duckdb_monitoring.py, "monitoring inputs in one pass") relies on the lake's file
order and stitches runs across days; each test builds a lake where one of its paths matters
and compares every table, bit for bit and in order, with ``monitoring_inputs_by_queries``
on the same engine (the queries themselves are compared with Spark's in
test_spark_engine.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake import DuckDBEngine, Lake, Manifest, Snapshot
from metrocloud.lake.engine import (
    REFERENCE_SUFFIX,
    MonitoringInputs,
    monitoring_inputs_by_queries,
    whole_days,
)
from metrocloud.lake.manifest import FileEntry
from metrocloud.lake.schema import FILE_SCHEMA

from ._support import T0, Row, table
from .test_spark_engine import messy_rows

Q = "1-0:1.8.0"
REF = Q + REFERENCE_SUFFIX
MIN = timedelta(minutes=1)


def _at(day: int, hour: float = 0, us: int = 0) -> datetime:
    return T0 + timedelta(days=day, hours=hour, microseconds=us)


def _equal(engine: DuckDBEngine, **kw: object) -> MonitoringInputs:
    got = engine.monitoring_inputs(**kw)  # type: ignore[arg-type]
    plan = engine.last_monitoring_plan
    want = monitoring_inputs_by_queries(engine, **kw)  # type: ignore[arg-type]
    for name in MonitoringInputs._fields:
        g, w = getattr(got, name), getattr(want, name)
        assert g.schema == w.schema, name
        assert _bits(g) == _bits(w), name
    engine.last_monitoring_plan = plan
    return got


def _bits(table: pa.Table) -> list[tuple[object, ...]]:
    """The rows, floats by their repr (NaN equal to NaN, -0.0 not to 0.0)."""
    return [
        tuple(repr(v) if isinstance(v, float) else v for v in row.values())
        for row in table.to_pylist()
    ]


def _lake(root: Path, segments: list[list[Row]], *, compact: bool = False) -> DuckDBEngine:
    with Lake.open(root, create=True) as lake:
        for n, rows in enumerate(segments):
            lake.write_segment(f"s{n}", table(rows))
        if compact:
            lake.compact()
    return DuckDBEngine(Lake.open(root), threads=2, memory_limit="512MiB")


WINDOWS: dict[str, dict[str, object]] = {
    "everything": {},
    "gap 1 h, flat 0": {"max_gap": timedelta(hours=1), "min_duration": timedelta(0)},
    "sub-ms window": {"start": _at(1, 7, 500), "end": _at(3, 2, 999), "max_gap": 20 * MIN},
    "partial days": {"start": _at(0, 12), "end": _at(5, 6), "grid": timedelta(seconds=1)},
    "midnight to midnight": {"start": _at(1), "end": _at(4), "grid": timedelta(seconds=7)},
    "inside one day": {"start": _at(2, 1), "end": _at(2, 9)},
    "open start": {"end": _at(2, 17), "min_duration": timedelta(minutes=30)},
    "category": {"category": "MI-001", "max_gap": 2 * timedelta(hours=1)},
}


@pytest.fixture(scope="module", params=["segments", "compacted"])
def messy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DuckDBEngine]:
    """The messy lake of the Spark comparison: interleaved segments (several files per
    partition, sorted by the pass) and, compacted, one sorted file per partition."""
    rows = messy_rows()
    root = tmp_path_factory.mktemp(f"messy-{request.param}")
    engine = _lake(root, [rows[n::3] for n in range(3)], compact=request.param == "compacted")
    yield engine
    engine.close()


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_the_pass_answers_what_the_queries_answer(messy: DuckDBEngine, window: str) -> None:
    got = _equal(messy, **WINDOWS[window])
    assert messy.last_monitoring_plan == "pass"
    if window == "everything":  # the lake gives every table something to hold
        assert all(getattr(got, name).num_rows for name in MonitoringInputs._fields)


def test_flat_runs_and_gaps_are_stitched_across_days(tmp_path: Path) -> None:
    """A register flat for three days (whole days flat in the middle), one flat over
    midnight only, a reset at midnight, a day without readings, readings off the grid."""
    rows: list[Row] = []
    value, b = 100.0, 50.0
    for k in range(6 * 96):
        t = T0 + k * 15 * MIN
        stuck = 96 + 40 <= k < 4 * 96 + 7  # from day 1, 10:00 to day 4, 01:45
        if not stuck:
            value += 0.25
        if k == 5 * 96:
            value = 1.0  # a reset at midnight of day 5
        rows.append(("A", "MI-003", t, Q, value))
        rows.append(("B", "MI-003", t, Q, b))
        b += 0.0 if k % 96 >= 92 or k % 96 < 4 else 0.5  # flat from 23:00 over midnight to 01:00
        if not 2 * 96 <= k < 3 * 96:  # C has no readings on day 2
            rows.append(("C", "MI-003", t + timedelta(milliseconds=1500 * (k % 3)), Q, k))
    engine = _lake(tmp_path, [rows[0::2], rows[1::2]], compact=True)
    for kw in ({}, {"start": _at(1, 12), "end": _at(3, 12)}, {"min_duration": timedelta(0)}):
        got = _equal(engine, **kw)  # type: ignore[arg-type]
        assert engine.last_monitoring_plan == "pass"
    got = engine.monitoring_inputs()
    stuck = [r for r in got.flat_runs.to_pylist() if r["instrument"] == "A"]
    assert [(r["first_t"], r["last_t"]) for r in stuck] == [(_at(1, 9.75), _at(4, 1.5))]
    anomalies = {(r["instrument"], r["kind"]) for r in got.counter_anomalies.to_pylist()}
    assert anomalies == {("A", "regression"), ("C", "gap")}


def test_reference_readings_find_their_register_reading(tmp_path: Path) -> None:
    """References after the day's last register reading, inside the day, before the day's
    first (the reading of an earlier day), on a day without register readings, before any
    register reading (left out), and of a register that has no readings at all."""
    rows: list[Row] = []
    for k in range(4 * 24):
        if k // 24 != 2:  # no register readings on day 2
            rows.append(("R", "MI-001", T0 + k * 60 * MIN, Q, 10.0 + k))
    refs = [
        _at(0, -0.5),  # before any register reading (the previous day): left out
        _at(0, 23, 1000),  # 1 ms after the day's last reading
        _at(1, 11, 500_000),  # inside the day, between two readings
        _at(1, 0),  # at a reading's very time
        _at(2, 12),  # on the day without register readings
        _at(3, 0, -1000),  # just before the next day's first reading
    ]
    rows += [("R", "MI-001", t, REF, 1000.0 + n) for n, t in enumerate(refs)]
    rows += [("S", "MI-001", _at(1, 5), "9-9:9.9.9" + REFERENCE_SUFFIX, 5.0)]
    # a reference of a reference quantity: its "register" is no register, left out
    rows += [("R", "MI-001", _at(1, 5), REF + REFERENCE_SUFFIX, 6.0)]
    engine = _lake(tmp_path, [rows], compact=True)
    got = _equal(engine)
    pairs = [(r["t"], r["register"]) for r in got.reference_pairs.to_pylist()]
    assert pairs == [
        (_at(0, 23, 1000), 33.0),
        (_at(1, 0), 34.0),
        (_at(1, 11, 500_000), 45.0),
        (_at(2, 12), 57.0),
        (_at(3, 0, -1000), 57.0),
    ]
    _equal(engine, start=_at(1, 6), end=_at(3, 4))


def test_nan_values_are_equal_to_each_other_as_in_sql(tmp_path: Path) -> None:
    nan = math.nan
    values = [1.0, nan, nan, nan, 2.0, 2.0, nan, 3.0, -0.0, 0.0, 0.0]
    rows: list[Row] = [("N", "MI-003", T0 + k * 40 * MIN, Q, v) for k, v in enumerate(values)]
    engine = _lake(tmp_path, [rows], compact=True)
    _equal(engine, min_duration=timedelta(0))
    _equal(engine, min_duration=timedelta(minutes=50))


def test_only_the_tables_asked_for(messy: DuckDBEngine) -> None:
    want = monitoring_inputs_by_queries(messy)
    only = monitoring_inputs_by_queries(messy, tables=("reference_pairs", "flat_runs"))
    for name in MonitoringInputs._fields:
        got = getattr(only, name)
        if name in ("reference_pairs", "flat_runs"):
            assert got.num_rows and got.equals(getattr(want, name)), name
        else:  # not queried: empty, of the table's schema
            assert got.num_rows == 0 and got.schema == getattr(want, name).schema, name
    # the pass reads the files once for all: the one asked for is the queries' answer
    passed = messy.monitoring_inputs(tables=("reference_pairs",))
    assert messy.last_monitoring_plan == "pass"
    assert _bits(passed.reference_pairs) == _bits(want.reference_pairs)
    for call in (
        lambda: messy.monitoring_inputs(tables=("reference_pair",)),
        lambda: monitoring_inputs_by_queries(messy, tables=("gaps",)),
    ):
        with pytest.raises(InvalidInput, match="unknown monitoring input"):
            call()


def test_a_register_in_two_categories_falls_back_to_the_queries(tmp_path: Path) -> None:
    rows: list[Row] = [
        ("X", "MI-001" if k % 2 else "MI-003", T0 + k * 15 * MIN, Q, float(k // 3))
        for k in range(3 * 96)
    ]
    rows += [("X", "MI-001", _at(1, 6, 1000), REF, 7.0)]
    engine = _lake(tmp_path, [rows], compact=True)
    _equal(engine)
    assert engine.last_monitoring_plan == "queries"
    _equal(engine, category="MI-001")  # within one category it holds again
    assert engine.last_monitoring_plan == "pass"


def test_a_file_out_of_order_is_sorted_first(tmp_path: Path) -> None:
    """A (foreign) file not sorted by (instrument, quantity, t) in a partition of its own."""
    rows: list[Row] = [
        (ins, "MI-005", T0 + k * 7 * MIN, Q, float(k % 17 + (k // 17) * 20))
        for k in range(200)
        for ins in ("P", "O")
    ]
    engine = _lake(tmp_path, [rows], compact=True)
    want = monitoring_inputs_by_queries(engine)
    engine.close()
    part = table(rows).drop_columns(["category"])
    shuffled = part.take(pa.array(list(range(part.num_rows))[::-1]))
    shuffled = pa.table(
        {f.name: shuffled.column(f.name).cast(f.type) for f in FILE_SCHEMA}, schema=FILE_SCHEMA
    )
    with Lake.open(tmp_path, writer=True) as lake:
        current = lake.manifest
        entries = []
        for f in current.files():
            day = datetime.fromisoformat(f.day).date()
            mine = shuffled.filter(
                pa.compute.equal(pa.compute.cast(shuffled.column("t"), pa.date32()), day)
            )
            size = lake.write_file(mine, f.path + ".reversed.parquet")
            entries.append(
                FileEntry(f.path + ".reversed.parquet", f.category, f.day, mine.num_rows, size)
            )
        lake.commit(current.next(datasets={"readings": tuple(entries)}))
    engine = DuckDBEngine(Lake.open(tmp_path), threads=1)
    got = _equal(engine)
    assert engine.last_monitoring_plan == "pass"
    for name in MonitoringInputs._fields:
        assert getattr(got, name).equals(getattr(want, name))


def test_an_empty_snapshot_and_bad_arguments(tmp_path: Path) -> None:
    engine = DuckDBEngine(Snapshot(tmp_path, Manifest()), threads=1)
    got = _equal(engine)
    assert all(getattr(got, name).num_rows == 0 for name in MonitoringInputs._fields)
    with pytest.raises(InvalidInput):
        engine.monitoring_inputs(max_gap=timedelta(-1))
    with pytest.raises(InvalidInput):
        engine.monitoring_inputs(grid=timedelta(0))
    with pytest.raises(InvalidInput):
        engine.monitoring_inputs(min_duration=timedelta(-1))
    with pytest.raises(InvalidInput, match="naive"):
        engine.monitoring_inputs(datetime(2026, 3, 1))


def test_whole_days_of_a_window() -> None:
    assert whole_days(None, None) == (None, None)
    assert whole_days(_at(0), _at(3)) == (T0.date(), _at(3).date())
    assert whole_days(_at(0, 0, 1), _at(3, 5)) == (_at(1).date(), _at(3).date())
    # inside one day: no whole day, an empty window (not an error)
    assert whole_days(_at(2, 1), _at(2, 9)) == (_at(3).date(), _at(3).date())
