"""The engine's queries against brute-force Python over the same readings."""

from __future__ import annotations

import itertools
import tempfile
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake import (
    COUNTER_ANOMALIES_SCHEMA,
    DAILY_CONSUMPTION_SCHEMA,
    INSTRUMENT_READINGS_SCHEMA,
    DuckDBEngine,
    Lake,
    LakeEngine,
)

from ._support import T0, Row, grid, table

CATS = ("MI-001", "MI-003")


# -- brute force ----------------------------------------------------------------------------


def registers(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        out[(r[0], r[3])].append(r)
    for v in out.values():
        v.sort(key=lambda r: r[2])
    return out


def brute_daily(
    rows: list[Row], start: date | None, end: date | None, category: str | None
) -> list[dict[str, Any]]:
    out = []
    for (ins, qty), every in sorted(registers(rows).items()):
        regs = [r for r in every if category is None or r[1] == category]
        by_day: dict[date, list[Row]] = defaultdict(list)
        for r in regs:
            by_day[r[2].date()].append(r)
        for day, day_rows in sorted(by_day.items()):
            if (start and day < start) or (end and day >= end):
                continue
            prev = by_day.get(day - timedelta(days=1))
            base = prev[-1][4] if prev else day_rows[0][4]
            out.append(
                {
                    "instrument": ins,
                    "quantity": qty,
                    "day": day,
                    "first_value": day_rows[0][4],
                    "last_value": day_rows[-1][4],
                    "consumption": day_rows[-1][4] - base,
                    "readings": len(day_rows),
                }
            )
    return out


def brute_anomalies(
    rows: list[Row],
    start: datetime | None,
    end: datetime | None,
    category: str | None,
    max_gap: timedelta,
) -> list[dict[str, Any]]:
    out = []
    for (ins, qty), every in sorted(registers(rows).items()):
        regs = [
            r
            for r in every
            if (category is None or r[1] == category)
            and (start is None or r[2] >= start)
            and (end is None or r[2] < end)
        ]
        for prev, cur in itertools.pairwise(regs):
            base = {
                "instrument": ins,
                "quantity": qty,
                "t": cur[2],
                "previous_t": prev[2],
                "previous_value": prev[4],
                "value": cur[4],
            }
            if cur[2] - prev[2] > max_gap:
                out.append({**base, "kind": "gap"})
            if cur[4] < prev[4]:
                out.append({**base, "kind": "regression"})
    out.sort(key=lambda a: (a["instrument"], a["quantity"], a["t"], a["kind"]))
    return [{k: a[k] for k in COUNTER_ANOMALIES_SCHEMA.names} for a in out]


# -- generated registers --------------------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> list[Row]:
    rows: list[Row] = []
    n_instruments = draw(st.integers(1, 3))
    for i in range(n_instruments):
        category = CATS[i % 2]
        for qty in draw(st.sets(st.sampled_from(["1-0:1.8.0", "1-0:2.8.0"]), min_size=1)):
            t = T0 + timedelta(minutes=draw(st.integers(0, 2000)))
            value = float(draw(st.integers(0, 1000)))
            for _ in range(draw(st.integers(1, 40))):
                rows.append((f"I{i}", category, t, qty, value))
                # mostly 15 minutes, sometimes a gap of hours or a day
                t += timedelta(
                    minutes=draw(st.sampled_from([15, 15, 15, 15, 30, 31, 45, 200, 1500]))
                )
                step = draw(st.sampled_from([0.0, 0.25, 1.5, 3.0, 3.0, -2.0]))
                value = round(value + step, 2)
    return rows


@st.composite
def windows(draw: st.DrawFn) -> tuple[date | None, date | None]:
    days = [None, *(T0.date() + timedelta(days=d) for d in range(-1, 6))]
    start, end = draw(st.sampled_from(days)), draw(st.sampled_from(days))
    if start and end and end < start:
        start, end = end, start
    return start, end


def build(root: Path, rows: list[Row], segments: int, compact: bool) -> Lake:
    lake = Lake.open(root, create=True)
    for n in range(segments):
        lake.write_segment(f"s{n}", table(rows[n::segments]))
    if compact:
        lake.compact()
    return lake


@settings(max_examples=40)
@given(
    rows=fleets(),
    segments=st.integers(1, 3),
    compact=st.booleans(),
    window=windows(),
    category=st.sampled_from([None, *CATS]),
)
def test_daily_consumption_is_the_brute_force_one(
    rows: list[Row],
    segments: int,
    compact: bool,
    window: tuple[date | None, date | None],
    category: str | None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lake = build(Path(tmp), rows, segments, compact)
        with DuckDBEngine(lake, memory_limit="256MiB", threads=1) as engine:
            got = engine.daily_consumption(*window, category=category)
        lake.close()
    assert got.schema == DAILY_CONSUMPTION_SCHEMA
    assert got.to_pylist() == brute_daily(rows, *window, category)


@settings(max_examples=40)
@given(
    rows=fleets(),
    segments=st.integers(1, 3),
    compact=st.booleans(),
    window=windows(),
    category=st.sampled_from([None, *CATS]),
    gap=st.sampled_from([15, 30, 45, 24 * 60]),
    as_datetime=st.booleans(),
)
def test_counter_anomalies_are_the_brute_force_ones(
    rows: list[Row],
    segments: int,
    compact: bool,
    window: tuple[date | None, date | None],
    category: str | None,
    gap: int,
    as_datetime: bool,
) -> None:
    def instant(d: date | None) -> datetime | None:
        return None if d is None else datetime(d.year, d.month, d.day, 7, 30, tzinfo=UTC)

    bounds: tuple[Any, Any] = (instant(window[0]), instant(window[1])) if as_datetime else window
    lo, hi = (instant(window[0]), instant(window[1]))
    if not as_datetime:
        lo, hi = (
            None if d is None else datetime(d.year, d.month, d.day, tzinfo=UTC) for d in window
        )
    with tempfile.TemporaryDirectory() as tmp:
        lake = build(Path(tmp), rows, segments, compact)
        answers = {}
        for plan in ("auto", "window"):
            with DuckDBEngine(lake, memory_limit="256MiB", threads=1, anomaly_plan=plan) as e:
                answers[plan] = e.counter_anomalies(
                    *bounds, category=category, max_gap=timedelta(minutes=gap)
                )
                if compact or segments == 1:  # one sorted file per partition
                    assert e.last_anomaly_plan == ("stream" if plan == "auto" else "window")
        lake.close()
    want = brute_anomalies(rows, lo, hi, category, timedelta(minutes=gap))
    for got in answers.values():
        assert got.schema == COUNTER_ANOMALIES_SCHEMA
        assert got.to_pylist() == want


# -- the other queries ------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> DuckDBEngine:
    rows = grid(("A1", "B2"), days=4) + grid(("A1",), days=4, quantity="1-0:2.8.0")
    rows += grid(("W1",), days=4, category="MI-001", quantity="8-0:1.0.0")
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("one", table(rows[::2]))
        lake.write_segment("two", table(rows[1::2]))
    return DuckDBEngine(Lake.open(tmp_path), threads=1)


def test_duckdb_engine_is_a_lake_engine(engine: DuckDBEngine) -> None:
    assert isinstance(engine, LakeEngine)


def test_instrument_readings_prunes_by_day_and_filters(engine: DuckDBEngine) -> None:
    start = datetime(2026, 3, 2, 6, tzinfo=UTC)
    end = datetime(2026, 3, 3, tzinfo=UTC)
    got = engine.instrument_readings("A1", start=start, end=end)
    assert got.schema == INSTRUMENT_READINGS_SCHEMA
    assert got.num_rows == 2 * 18  # two registers, 18 hourly readings from 06:00
    assert set(got.column("quantity").to_pylist()) == {"1-0:1.8.0", "1-0:2.8.0"}
    keys = list(zip(got.column("quantity").to_pylist(), got.column("t").to_pylist(), strict=True))
    assert keys == sorted(keys)
    one = engine.instrument_readings("A1", quantity="1-0:2.8.0", start=date(2026, 3, 4))
    assert one.num_rows == 24 and set(one.column("day").to_pylist()) == {date(2026, 3, 4)}
    assert engine.instrument_readings("nobody").num_rows == 0
    # the window touches one day: the query reads that day's files only
    files = engine.snapshot.files(first_day=date(2026, 3, 2), last_day=date(2026, 3, 2))
    assert len(files) == 2 * 2 and all("day=2026-03-02" in str(f) for f in files)


def test_fleet_summary(engine: DuckDBEngine) -> None:
    got = engine.fleet_summary(start=date(2026, 3, 2), end=date(2026, 3, 4), category="MI-003")
    assert got.to_pylist() == [
        {
            "category": "MI-003",
            "day": date(2026, 3, d),
            "instruments": 2,
            "readings": 3 * 24,
            "first_t": datetime(2026, 3, d, tzinfo=UTC),
            "last_t": datetime(2026, 3, d, 23, tzinfo=UTC),
        }
        for d in (2, 3)
    ]


def test_bad_bounds_are_invalid_input(engine: DuckDBEngine) -> None:
    with pytest.raises(InvalidInput, match="naive datetime"):
        engine.instrument_readings("A1", start=datetime(2026, 3, 1))
    with pytest.raises(InvalidInput, match="before start"):
        engine.counter_anomalies(start=date(2026, 3, 2), end=date(2026, 3, 1))
    with pytest.raises(InvalidInput, match="must be a date"):
        engine.daily_consumption(start=datetime(2026, 3, 1, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="max_gap"):
        engine.counter_anomalies(max_gap=timedelta(minutes=-1))


def test_an_empty_lake_answers_empty_tables(tmp_path: Path) -> None:
    with Lake.open(tmp_path, create=True) as lake, DuckDBEngine(lake, threads=1) as e:
        assert e.daily_consumption().num_rows == 0
        assert e.counter_anomalies().schema == COUNTER_ANOMALIES_SCHEMA
        assert e.instrument_readings("x").num_rows == 0
        assert e.sql("SELECT count(*) AS n FROM readings").column("n")[0].as_py() == 0


def test_interleaved_files_fall_back_to_the_window_plan(tmp_path: Path) -> None:
    rows = grid(("A1",), days=1, per_day=96)
    rows[40] = (*rows[40][:4], 0.0)  # a regression
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("even", table(rows[0::2]))
        lake.write_segment("odd", table(rows[1::2]))
        with DuckDBEngine(lake, threads=1) as e:
            got = e.counter_anomalies(max_gap=timedelta(minutes=20))
            assert e.last_anomaly_plan == "window"  # the two files' runs overlap in time
            lake.compact()
            e.refresh()
            assert e.counter_anomalies(max_gap=timedelta(minutes=20)).equals(got)
            assert e.last_anomaly_plan == "stream"
    assert got.column("kind").to_pylist() == ["regression"]
    assert got.column("t").to_pylist() == [rows[40][2]]


def test_results_are_plain_arrow(engine: DuckDBEngine) -> None:
    got = engine.daily_consumption()
    assert got.num_rows == 4 * 4
    assert got.column("instrument").type == pa.string()
    a1 = [r for r in got.to_pylist() if r["instrument"] == "A1" and r["quantity"] == "1-0:1.8.0"]
    # 24 readings a day, 0.5 apart: the first day 23 steps, then 24 with the previous day's
    assert [r["consumption"] for r in a1] == [11.5, 12.0, 12.0, 12.0]
