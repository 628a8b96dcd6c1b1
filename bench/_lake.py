"""Lake benchmark (issue figure c): fleet aggregates through the lake vs direct DuckDB SQL.

``run_fleet_aggregates(readings, workdir)`` synthesizes about ``readings`` meter readings
(vectorized, in DuckDB), writes them through :meth:`Lake.write_segment` in six-hour segments
(all instruments each), compacts, then times the two fleet queries (daily consumption per
instrument; counter regressions and gaps) through :class:`DuckDBEngine` and, as the baseline,
the same two queries hand-written in DuckDB SQL over the same files' glob, in the same run.
Both answers must be identical (``ResultMismatch`` otherwise). Nothing is printed on stdout:
the caller emits the figures; progress goes to stderr.
"""

from __future__ import annotations

import math
import resource
import shutil
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from metrocloud.lake import (
    COUNTER_ANOMALIES_SCHEMA,
    DAILY_CONSUMPTION_SCHEMA,
    DuckDBEngine,
    Lake,
)

__all__ = ["ResultMismatch", "run_fleet_aggregates"]

DAYS = 35
SLOTS_PER_DAY = 96  # one reading every 15 minutes
SEGMENT_SLOTS = 24  # six hours of the whole fleet per segment
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
MEMORY_LIMIT = "3GiB"
THREADS = 2

#: category code, OBIS quantity, unit; instrument i belongs to CATEGORIES[i % 5]
CATEGORIES = (
    ("MI-001", "8-0:1.0.0", "m3"),
    ("MI-002", "7-0:3.0.0", "m3"),
    ("MI-003", "1-0:1.8.0", "kWh"),
    ("MI-004", "6-0:1.0.0", "kWh"),
    ("DE-EV", "1-0:1.8.0", "kWh"),
)
REGRESSION_ONE_IN = 100_003  # a reading dips below its predecessor (about 1e-5)
GAP_ONE_IN = 20_011  # an hour of readings (4) is missing (about 5e-5 of hours)


class ResultMismatch(AssertionError):
    """The lake and the direct queries disagree."""


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(f"'{x}'" for x in items) + "]"


def _generate_sql(instruments: int) -> str:
    cats = _sql_list([c for c, _, _ in CATEGORIES])
    qty = _sql_list([q for _, q, _ in CATEGORIES])
    units = _sql_list([u for _, _, u in CATEGORIES])
    # rate: register increase per slot; value = base + rate*k + jitter(k) (jitter < rate/2
    # keeps it cumulative), minus 5*rate where a regression is injected
    return f"""
    WITH grid AS (
        SELECT i, k,
               (hash(i) % 100000)::DOUBLE AS base,
               0.05 + (hash(i + 7) % 1000)::DOUBLE / 10000 AS rate,
               (hash(i, k) % 1000)::DOUBLE / 2000 AS jitter,
               hash(i, k + 1) % {REGRESSION_ONE_IN} = 0 AS dip
        FROM range(0, {instruments}) r(i), range($k0, $k1) s(k)
        WHERE hash(i, k // 4, 17) % {GAP_ONE_IN} <> 0
    )
    SELECT printf('MC%07d', i) AS instrument,
           {cats}[i % 5 + 1] AS category,
           to_timestamp({EPOCH} + k * 900) AS t,
           {qty}[i % 5 + 1] AS quantity,
           round(base + rate * k + rate * jitter - CASE WHEN dip THEN 5 * rate ELSE 0 END, 4)
               AS value,
           {units}[i % 5 + 1] AS unit,
           0::INTEGER AS status,
           (k // 4)::BIGINT AS batch_counter,
           (k % 4)::INTEGER AS seq,
           to_timestamp({EPOCH} + k * 900 + 2) AS ingested_at
    FROM grid
    """


def _direct_sql(glob: str, gap_minutes: int) -> tuple[str, str]:
    """The two queries hand-written in DuckDB SQL over the Parquet glob (the baseline)."""
    src = f"read_parquet('{glob}', hive_partitioning = true)"
    daily = f"""
    WITH daily AS MATERIALIZED (
        SELECT instrument, quantity, day,
               arg_min(value, t) AS first_value, arg_max(value, t) AS last_value,
               count(*) AS readings
        FROM {src}
        GROUP BY instrument, quantity, day
    )
    SELECT d.instrument, d.quantity, d.day, d.first_value, d.last_value,
           d.last_value - coalesce(p.last_value, d.first_value) AS consumption, d.readings
    FROM daily d
    LEFT JOIN daily p
           ON p.instrument = d.instrument AND p.quantity = d.quantity AND p.day = d.day - 1
    ORDER BY d.instrument, d.quantity, d.day
    """
    anomalies = f"""
    WITH odd AS MATERIALIZED (
        SELECT * FROM (
            SELECT instrument, quantity, t, value,
                   lag(t) OVER w AS previous_t, lag(value) OVER w AS previous_value
            FROM {src}
            WINDOW w AS (PARTITION BY instrument, quantity ORDER BY t)
        )
        WHERE value < previous_value OR t - previous_t > INTERVAL {gap_minutes} MINUTE
    )
    SELECT instrument, quantity, 'gap' AS kind, t, previous_t, previous_value, value
    FROM odd WHERE t - previous_t > INTERVAL {gap_minutes} MINUTE
    UNION ALL
    SELECT instrument, quantity, 'regression' AS kind, t, previous_t, previous_value, value
    FROM odd WHERE value < previous_value
    ORDER BY instrument, quantity, t, kind
    """
    return daily, anomalies


def _connect(tmp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        config={
            "threads": THREADS,
            "memory_limit": MEMORY_LIMIT,
            "temp_directory": str(tmp),
            "preserve_insertion_order": False,
        }
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


def peak_rss_mib() -> float:
    """The whole process's peak resident set so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_equal(name: str, lake: pa.Table, direct: pa.Table, schema: pa.Schema) -> None:
    direct = direct.cast(schema)
    if lake.num_rows != direct.num_rows:
        raise ResultMismatch(f"{name}: lake {lake.num_rows} rows, direct {direct.num_rows}")
    for col in ("consumption", "value"):
        if col in schema.names:
            a = math.fsum(x for x in lake.column(col).to_pylist() if x is not None)
            b = math.fsum(x for x in direct.column(col).to_pylist() if x is not None)
            if a != b:
                raise ResultMismatch(f"{name}: sum({col}) lake {a!r}, direct {b!r}")
    if not lake.equals(direct):
        raise ResultMismatch(f"{name}: same counts and sums but the rows differ")


def _arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_fleet_aggregates(
    readings: int, workdir: Path, *, rounds: int = 2, log: Console | None = None
) -> list[dict[str, Any]]:
    """Build a lake of about ``readings`` readings under ``workdir`` and measure (see module
    doc). Returns the figures as dicts {name, value, unit, target, better, scale}."""
    console = log or Console(stderr=True)
    instruments = max(5, round(readings / (DAYS * SLOTS_PER_DAY)))
    root = workdir / "lake"
    if root.exists():
        shutil.rmtree(root)
    spill = workdir / "duckdb-tmp"
    spill.mkdir(parents=True, exist_ok=True)

    # -- generate and write ------------------------------------------------------------
    gen = _connect(spill)
    sql = _generate_sql(instruments)
    segments = DAYS * SLOTS_PER_DAY // SEGMENT_SLOTS
    written = 0
    gen_s = write_s = 0.0
    with (
        Lake.open(root, create=True) as lake,
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task(f"writing {instruments} instruments x {DAYS} days", total=segments)
        for s in range(segments):
            k0 = s * SEGMENT_SLOTS
            dt, table = _timed(
                lambda k0=k0: gen.sql(
                    sql, params={"k0": k0, "k1": k0 + SEGMENT_SLOTS}
                ).to_arrow_table()
            )
            gen_s += dt
            dt, _ = _timed(lambda s=s, table=table: lake.write_segment(f"bench-{s:05d}", table))
            write_s += dt
            written += table.num_rows
            del table
            bar.advance(task)
        files_before = lake.stats()["files"]
        compact_s, report = _timed(lake.compact)
        lake.vacuum()
        stats = lake.stats()
    gen.close()
    console.print(
        f"lake: {written:,} readings, {files_before} files -> {stats['files']} after compacting "
        f"{report.partitions} partitions in {compact_s:.1f} s; {stats['bytes'] / 2**20:,.0f} MiB"
    )
    scale = f"{written} readings"

    # -- query: through the lake, and directly -------------------------------------------
    glob = str(root / "readings" / "*" / "*" / "*.parquet")
    daily_sql, anomalies_sql = _direct_sql(glob, 30)
    lake_times: list[float] = []
    direct_times: list[float] = []
    results: dict[str, tuple[pa.Table, pa.Table]] = {}
    lake_peak = 0.0
    reader = Lake.open(root)
    for r in range(rounds):
        with DuckDBEngine(reader, memory_limit=MEMORY_LIMIT, threads=THREADS) as engine:
            t_daily, daily = _timed(engine.daily_consumption)
            t_anom, anomalies = _timed(engine.counter_anomalies)
            plan = engine.last_anomaly_plan
        lake_times.append(t_daily + t_anom)
        console.print(
            f"round {r + 1}: lake daily {t_daily:.2f} s, anomalies {t_anom:.2f} s ({plan} plan)"
        )
        if r == 0:
            lake_peak = peak_rss_mib()  # generation, writing, compaction, lake queries
        direct = _connect(spill)
        d_daily, daily_direct = _timed(partial(_arrow, direct, daily_sql))
        d_anom, anomalies_direct = _timed(partial(_arrow, direct, anomalies_sql))
        direct.close()
        direct_times.append(d_daily + d_anom)
        console.print(f"round {r + 1}: direct daily {d_daily:.2f} s, anomalies {d_anom:.2f} s")
        results = {"daily": (daily, daily_direct), "anomalies": (anomalies, anomalies_direct)}
    _check_equal("daily consumption", *results["daily"], DAILY_CONSUMPTION_SCHEMA)
    _check_equal("counter anomalies", *results["anomalies"], COUNTER_ANOMALIES_SCHEMA)
    kinds = results["anomalies"][0].column("kind").value_counts().to_pylist()
    console.print(
        f"results identical: {results['daily'][0].num_rows:,} register-days, anomalies "
        + ", ".join(f"{k['values']}={k['counts']}" for k in kinds)
    )

    lake_s, direct_s = min(lake_times), min(direct_times)
    disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def fig(
        name: str, value: float, unit: str, target: float | None, better: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "value": round(value, 4),
            "unit": unit,
            "target": target,
            "better": better,
            "scale": scale,
        }

    return [
        fig("lake_fleet_aggregate_s", lake_s, "s", None, "lower"),
        fig("direct_duckdb_s", direct_s, "s", None, "lower"),
        fig("lake_vs_direct_ratio", lake_s / direct_s, "x", 1.5, "lower"),
        fig("peak_rss_mib", peak_rss_mib(), "MiB", 4096, "lower"),
        fig("peak_rss_before_direct_mib", lake_peak, "MiB", None, "lower"),
        fig("write_readings_per_s", written / write_s, "readings/s", None, "higher"),
        fig("generate_readings_per_s", written / gen_s, "readings/s", None, "higher"),
        fig("compaction_s", compact_s, "s", None, "lower"),
        fig("lake_disk_mib", disk / 2**20, "MiB", None, "lower"),
    ]


if __name__ == "__main__":  # pragma: no cover - use bench/lake.py
    sys.exit("run bench/lake.py")
