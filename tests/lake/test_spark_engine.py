"""The Spark engine answers exactly what the DuckDB engine answers, over the same files.

One Spark session (local[2]) for the module. The lake is messy on purpose: fractional
values (so the consumption subtraction works on real doubles), regressions, resets, gaps of
minutes to days, missing days, flat runs, clocks off the grid by whole and fractional
seconds (medians of an even count), reference readings 1 ms after the register's and one
before any register reading, three categories, and three interleaved segments (DuckDB's
window plan; after compaction its one-pass stream plan). Every method of LakeEngine is
compared table-equal (schema, row order, every value bit for bit) under several windows,
categories and parameters; so is DuckDB's one-pass ``monitoring_inputs`` with Spark's.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake import (
    DuckDBEngine,
    EngineUnavailable,
    Lake,
    LakeEngine,
    Manifest,
    Snapshot,
    open_engine,
)
from metrocloud.lake.engine import REFERENCE_SUFFIX, MonitoringInputs
from metrocloud.lake.spark_engine import SMALL_LAKE_CONF, SparkEngine, local_session
from tests._java import require_java

from ._support import T0, Row, table

QTYS = ("1-0:1.8.0", "1-0:2.8.0")
CATS = ("MI-001", "MI-003", "MI-005")
D0 = T0.date()


def messy_rows(seed: int = 7) -> list[Row]:
    rnd = random.Random(seed)
    rows: list[Row] = []
    for i in range(6):
        ins, category = f"I{i}", CATS[i % 3]
        for qty in QTYS[: 1 + i % 2]:
            t = T0 + timedelta(minutes=rnd.randint(0, 600), seconds=rnd.choice([0, 0, 17]))
            value = rnd.randint(0, 1000) + rnd.random()
            reference = value * 1.01
            with_reference = i in (0, 2, 3)
            if with_reference:  # a reference reading before any register reading: left out
                rows.append((ins, category, t - timedelta(hours=1), qty + REFERENCE_SUFFIX, 1.0))
            for k in range(rnd.randint(150, 320)):
                jitter = timedelta(milliseconds=rnd.randint(-4000, 4000)) if i in (1, 4) else None
                tt = t + (jitter or timedelta(0))
                rows.append((ins, category, tt, qty, value))
                if with_reference and k % 24 == 23:
                    rows.append(
                        (
                            ins,
                            category,
                            tt + timedelta(milliseconds=1),
                            qty + REFERENCE_SUFFIX,
                            reference,
                        )
                    )
                t += timedelta(minutes=rnd.choice([15] * 12 + [30, 31, 45, 200, 1500]))
                step = rnd.choice([0.0, 0.0, 0.1, 0.25, 1.3, 3.7, 0.7, -2.2])
                if i == 5 and 40 <= k < 70:
                    step = 0.0  # a long flat run
                if rnd.random() < 0.01:
                    value *= 0.05  # a reset
                value += step
                reference += max(step, 0.0) * 1.01
    return rows


@dataclass
class Engines:
    duck: DuckDBEngine
    spark: SparkEngine
    rows: list[Row]
    root: Path


@pytest.fixture(scope="module")
def session() -> Iterator[SparkSession]:
    require_java()
    spark = local_session("local[2]", conf=SMALL_LAKE_CONF)
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def engines(session: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    root = tmp_path_factory.mktemp("spark-lake")
    rows = messy_rows()
    with Lake.open(root, create=True) as lake:
        for n in range(3):
            lake.write_segment(f"s{n}", table(rows[n::3]))
    reader = Lake.open(root)
    duck = DuckDBEngine(reader, threads=1, memory_limit="512MiB")
    spark = SparkEngine(reader, session=session)
    yield Engines(duck, spark, rows, root)
    duck.close()
    spark.close()


def _at(day: int, hour: int = 0, us: int = 0) -> datetime:
    return T0 + timedelta(days=day, hours=hour, microseconds=us)


Call = Callable[[LakeEngine], pa.Table]

CASES: dict[str, Call] = {
    "daily_consumption": lambda e: e.daily_consumption(),
    "daily_consumption window": lambda e: e.daily_consumption(D0 + timedelta(1), D0 + timedelta(3)),
    "counter_anomalies": lambda e: e.counter_anomalies(),
    "counter_anomalies gap 1 h, category": lambda e: e.counter_anomalies(
        category="MI-001", max_gap=timedelta(hours=1)
    ),
    # bounds finer than the readings' milliseconds: compared as given, not rounded
    "counter_anomalies sub-ms window": lambda e: e.counter_anomalies(
        _at(1, 7, 500), _at(3, 2, 999), max_gap=timedelta(minutes=20)
    ),
    "fleet_summary window, category": lambda e: e.fleet_summary(
        D0, D0 + timedelta(2), category="MI-005"
    ),
    "reference_pairs": lambda e: e.reference_pairs(),
    "reference_pairs window": lambda e: e.reference_pairs(_at(1, 3), _at(4)),
    "flat_runs all": lambda e: e.flat_runs(min_duration=timedelta(0)),
    "flat_runs 1 h, window": lambda e: e.flat_runs(
        _at(0, 12), _at(5), min_duration=timedelta(hours=1)
    ),
    "grid_offsets 15 min": lambda e: e.grid_offsets(),
    "grid_offsets 1 s, category": lambda e: e.grid_offsets(
        category="MI-003", grid=timedelta(seconds=1)
    ),
    "instrument_readings": lambda e: e.instrument_readings("I1"),
    "instrument_readings quantity, window": lambda e: e.instrument_readings(
        "I3", QTYS[1], _at(1, 5), _at(2, 5)
    ),
    "instrument_readings page": lambda e: e.instrument_readings(
        "I1", after=(QTYS[0], _at(2, 3)), limit=50
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spark_and_duckdb_answer_equal_tables(engines: Engines, case: str) -> None:
    want = CASES[case](engines.duck)
    got = CASES[case](engines.spark)
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert got.equals(want)  # bit for bit, in the same order


@pytest.mark.parametrize(
    "window",
    [
        {},
        {"start": _at(1, 3), "end": _at(4, 7), "category": "MI-001", "grid": timedelta(seconds=1)},
    ],
)
def test_monitoring_inputs_are_equal(engines: Engines, window: dict[str, object]) -> None:
    """DuckDB's one pass against Spark's five queries (the definition)."""
    want = engines.duck.monitoring_inputs(**window)  # type: ignore[arg-type]
    assert engines.duck.last_monitoring_plan == "pass"
    got = engines.spark.monitoring_inputs(**window)  # type: ignore[arg-type]
    for name in MonitoringInputs._fields:
        assert getattr(got, name).equals(getattr(want, name)), name


def test_the_lake_exercises_what_the_comparison_claims(engines: Engines) -> None:
    """Guards the comparison above against a lake where it would prove little."""
    e = engines.duck
    kinds = set(e.counter_anomalies().column("kind").to_pylist())
    assert kinds == {"gap", "regression"}
    consumption = e.daily_consumption().column("consumption").to_pylist()
    assert any(c < 0 for c in consumption) and any(c != round(c, 2) for c in consumption)
    offsets = e.grid_offsets(grid=timedelta(seconds=1)).column("median_offset_ms").to_pylist()
    assert any(o % 1 == 0.5 for o in offsets)  # an interpolated median
    assert any(o < 0 for o in offsets) and any(o > 0 for o in offsets)
    pairs = e.reference_pairs()
    refs = sum(1 for r in engines.rows if r[3].endswith(REFERENCE_SUFFIX))
    assert 0 < pairs.num_rows < refs  # the early references have no register reading
    assert max(e.flat_runs(min_duration=timedelta(0)).column("readings").to_pylist()) >= 30
    e.counter_anomalies()
    assert e.last_anomaly_plan == "window"  # the segments interleave (compaction: below)


def test_compaction_and_refresh_keep_them_equal(engines: Engines, session: SparkSession) -> None:
    """After compaction DuckDB takes its one-pass stream plan; both engines move to the new
    version on refresh and still agree."""
    with Lake.open(engines.root, writer=True) as lake:
        before = lake.manifest.version
        lake.compact()
    duck = DuckDBEngine(Lake.open(engines.root), threads=1, memory_limit="512MiB")
    spark = SparkEngine(Lake.open(engines.root), session=session)
    try:
        assert duck.version == spark.version > before
        want = duck.counter_anomalies(max_gap=timedelta(minutes=40))
        assert duck.last_anomaly_plan == "stream"
        assert spark.counter_anomalies(max_gap=timedelta(minutes=40)).equals(want)
        assert spark.daily_consumption().equals(duck.daily_consumption())
        # the module's engines still read their old snapshot until they refresh
        assert engines.spark.version == before
        assert engines.spark.refresh() == engines.duck.refresh() == duck.version
    finally:
        duck.close()
        spark.close()


def test_sql_is_spark_sql_over_the_snapshot(engines: Engines) -> None:
    query = (
        "SELECT category, count(*) AS n, min(value) AS lo FROM readings "
        "GROUP BY category ORDER BY category"
    )
    got = engines.spark.sql(query)
    assert got.to_pylist() == engines.duck.sql(query).to_pylist()
    assert sum(got.column("n").to_pylist()) == len(engines.rows)


def test_an_empty_snapshot_answers_empty_tables_of_the_schemas(
    session: SparkSession, tmp_path: Path
) -> None:
    empty = Snapshot(tmp_path, Manifest())
    spark = SparkEngine(empty, session=session)
    duck = DuckDBEngine(empty, threads=1)
    try:
        got, want = spark.reference_pairs(), duck.reference_pairs()
        assert got.num_rows == 0 and got.schema == want.schema
    finally:
        duck.close()


def test_spark_is_a_lake_engine_and_checks_its_arguments(engines: Engines) -> None:
    assert isinstance(engines.spark, LakeEngine)
    with pytest.raises(InvalidInput, match="naive"):
        engines.spark.counter_anomalies(datetime(2026, 3, 1))
    with pytest.raises(InvalidInput, match="before start"):
        engines.spark.fleet_summary(D0, D0 - timedelta(1))
    with pytest.raises(InvalidInput):
        engines.spark.grid_offsets(grid=timedelta(0))
    with pytest.raises(InvalidInput):
        engines.spark.flat_runs(min_duration=timedelta(-1))


def test_open_engine_picks_by_name(engines: Engines, session: SparkSession) -> None:
    snapshot = engines.duck.snapshot
    spark = open_engine(snapshot, "spark", spark_session=session)
    assert isinstance(spark, SparkEngine) and spark.version == snapshot.version
    spark.close()  # a session it did not start stays up
    assert session.sql("SELECT 1 AS one").collect()[0].one == 1
    duck = open_engine(snapshot)
    assert isinstance(duck, DuckDBEngine)
    duck.close()
    with pytest.raises(InvalidInput, match="spark engine only"):
        open_engine(snapshot, "duckdb", spark_master="local[1]")
    with pytest.raises(InvalidInput, match="expected one of duckdb, spark"):
        open_engine(snapshot, "polars")


def test_missing_pyspark_or_java_and_downloads_are_clear_errors(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.delenv("JAVA_HOME", raising=False)
        m.setenv("PATH", "/nonexistent")
        with pytest.raises(EngineUnavailable, match="Java runtime"):
            local_session()
    with pytest.raises(InvalidInput, match="download at run time"):
        local_session(conf={"spark.jars.packages": "org.example:anything:1.0"})
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pyspark.sql", None)
        with pytest.raises(EngineUnavailable, match=r"pip install 'metrocloud\[spark\]'"):
            SparkEngine(engines.duck.snapshot)
