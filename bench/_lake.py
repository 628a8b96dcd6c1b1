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
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

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

__all__ = [
    "FLEET_PROFILES",
    "FLEET_PROFILE_OF",
    "LakeBuild",
    "ResultMismatch",
    "fleet_instruments",
    "run_fleet_aggregates",
    "write_fleet_lake",
    "write_lake",
]

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


class LakeBuild(NamedTuple):
    """What :func:`write_lake` did: readings written, seconds per phase, files."""

    written: int
    gen_s: float
    write_s: float
    compact_s: float
    files_before: int
    files: int
    partitions: int
    bytes: int


def write_lake(
    root: Path,
    gen: duckdb.DuckDBPyConnection,
    sql: str,
    segments: Sequence[dict[str, Any]],
    *,
    label: str,
    console: Console,
    prefix: str = "bench",
) -> LakeBuild:
    """A new lake at ``root``: ``sql`` (on ``gen``) run once per segment with its parameters,
    each answer written by :meth:`Lake.write_segment` (ids ``<prefix>-00000``, ...), then
    compacted and vacuumed."""
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
        task = bar.add_task(label, total=len(segments))
        for s, params in enumerate(segments):
            dt, table = _timed(lambda params=params: gen.sql(sql, params=params).to_arrow_table())
            gen_s += dt
            dt, _ = _timed(lambda s=s, table=table: lake.write_segment(f"{prefix}-{s:05d}", table))
            write_s += dt
            written += table.num_rows
            del table
            bar.advance(task)
        files_before = lake.stats()["files"]
        compact_s, report = _timed(lake.compact)
        lake.vacuum()
        stats = lake.stats()
    console.print(
        f"lake: {written:,} readings, {files_before} files -> {stats['files']} after compacting "
        f"{report.partitions} partitions in {compact_s:.1f} s; {stats['bytes'] / 2**20:,.0f} MiB"
    )
    return LakeBuild(
        written,
        gen_s,
        write_s,
        compact_s,
        files_before,
        stats["files"],
        report.partitions,
        stats["bytes"],
    )


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
    segments = DAYS * SLOTS_PER_DAY // SEGMENT_SLOTS
    build = write_lake(
        root,
        gen,
        _generate_sql(instruments),
        [{"k0": s * SEGMENT_SLOTS, "k1": (s + 1) * SEGMENT_SLOTS} for s in range(segments)],
        label=f"writing {instruments} instruments x {DAYS} days",
        console=console,
    )
    gen.close()
    written, gen_s, write_s, compact_s = build.written, build.gen_s, build.write_s, build.compact_s
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


# -- a monitoring fleet (bench/services.py --synthetic-readings) --------------------------------
# The simulator's mix (docs/sim.md 2), generated in DuckDB instead of signed and sent through
# the intake: 40 % electricity (every 15 min), 20 % gas and 20 % water (hourly; water flat at
# night), 10 % fuel dispensers (about 85 transactions a day, whole seconds), 10 % EV charging
# points (about 6 readings a day, whole seconds); a quarter of the instruments with a daily
# reference reading 1 ms after the register's last reading of the day (docs/sim.md 3.2).
# Daily consumption: a level per instrument, a weekly factor the whole fleet shares and
# lognormal noise per instrument and day; each instrument's relative error drifts linearly
# (5 % of them cross the in-service MPE). Faults, one per instrument at most: stuck register
# (1 to 3 days, the consumption is lost), counter reset, clock drift (2 to 20 s a day),
# under-registration (ratio 0.75 to 0.92), reverse flow (two hours), a missing day, and
# random hour-long gaps of the interval registers.

#: index, category, quantity, unit, resolution, mean daily consumption, daily noise (sigma
#: of the log), in-service MPE (percent, DE), accuracy class; instrument i has profile
#: FLEET_PROFILE_OF[i % 10]
FLEET_PROFILES = (
    (0, "MI-003", "1-0:1.8.0", "kWh", 0.001, 8.2, 0.25, 4.0, "B"),
    (1, "MI-002", "7-0:3.0.0", "m³", 0.001, 3.6, 0.10, 3.0, "1.5"),
    (2, "MI-001", "8-0:1.0.0", "m³", 0.001, 0.3, 0.30, 4.0, "2"),
    (3, "MI-005", "V-tot", "L", 0.01, 3000.0, 0.15, 1.0, "0.5"),
    (4, "DE-EV", "1-0:1.8.0", "kWh", 0.001, 50.0, 0.50, 4.0, "B"),
)
FLEET_PROFILE_OF = (0, 0, 0, 0, 1, 1, 2, 2, 3, 4)
#: register readings per instrument-day of the mix, plus a quarter reference reading
FLEET_READINGS_PER_DAY = (4 * 96 + 2 * 24 + 2 * 24 + 192 * 0.44 + 6) / 10 + 0.25
#: fault -> per mille of the fleet (cumulative thresholds below)
FLEET_FAULTS = (
    ("stuck", 20),
    ("reset", 5),
    ("clock", 30),
    ("under", 10),
    ("reverse", 10),
    ("missing", 5),
)


def _fleet_setup_sql(days: int) -> str:
    profiles = ", ".join(
        f"({p}, '{c}', '{q}', '{u}', {r}, {m}, {s}, {mpe})"
        for p, c, q, u, r, m, s, mpe, _ in FLEET_PROFILES
    )
    cases, edge = [], 0
    for name, per_mille in FLEET_FAULTS:
        edge += per_mille
        cases.append(f"WHEN fault_draw < {edge} THEN '{name}'")
    unif = "(hash(i, {n}) % 1000003) / 1000003.0"
    return f"""
    CREATE OR REPLACE TABLE fleet_profiles AS
    SELECT * FROM (VALUES {profiles}) v(p, category, quantity, unit, res, mean, sigma, mpe);

    CREATE OR REPLACE MACRO fleet_shape(p, x) AS
        CASE WHEN p = 2
             THEN CASE WHEN x < 5.0 / 24 THEN 0.0
                       ELSE (x - 5.0 / 24) / (19.0 / 24)
                            - 0.9 * sin(2 * pi() * (x - 5.0 / 24) / (19.0 / 24)) / (2 * pi())
                  END
             ELSE x - 0.9 * sin(2 * pi() * x) / (2 * pi())
        END;

    CREATE OR REPLACE TABLE fleet_ins AS
    WITH u AS (
        SELECT i, instrument, {_sql_list([str(x) for x in FLEET_PROFILE_OF])}[i % 10 + 1]::INTEGER
                   AS p,
               {unif.format(n=1)} AS u_base, {unif.format(n=2)} AS u_level,
               hash(i, 3) % 1000 AS fault_draw, {unif.format(n=4)} AS u_day,
               {unif.format(n=5)} AS u_param, {unif.format(n=6)} AS u_e0,
               ({unif.format(n=7)} + {unif.format(n=8)} + {unif.format(n=9)}) * 2 - 3 AS z,
               hash(i, 10) % 100 < 5 AS crossing, {unif.format(n=14)} AS u_cross,
               hash(i, 11) % 4 = 0 AS has_ref,
               CASE WHEN hash(i, 13) % 2 = 0 THEN 1 ELSE -1 END AS sign
        FROM fleet_ids
    ), f AS (
        SELECT u.*, pr.mean, pr.sigma, pr.mpe,
               CASE {" ".join(cases)} END AS fault,
               floor({days} * (0.2 + 0.6 * u_day))::INTEGER AS fault_day,
               pr.mpe * 0.25 * (2 * u_e0 - 1) AS e0
        FROM u JOIN fleet_profiles pr USING (p)
    )
    SELECT i, instrument, p, has_ref, fault, fault_day,
           100 + 49900 * u_base AS base,
           mean * exp(u_level - 0.5) AS level,
           sigma, e0,
           CASE WHEN crossing
                THEN (sign * mpe - e0) / ({days} * (0.2 + 0.65 * u_cross))
                ELSE greatest(least(z * 0.15 * mpe / 365, (0.9 * mpe - abs(e0)) / {days}),
                              -(0.9 * mpe - abs(e0)) / {days})
           END AS drift_per_day,
           1 + hash(i, 12) % 3 AS stuck_days,
           sign * (2000 + 18000 * u_param) AS clock_ms_per_day,
           0.75 + 0.17 * u_param AS under_ratio
    FROM f;

    CREATE OR REPLACE TABLE fleet_plan AS
    WITH daily AS (
        SELECT f.i, r.d, f.base,
               f.level * (1 + 0.15 * sin(2 * pi() * r.d / 7))
                   * exp(f.sigma * (((hash(f.i, r.d, 21) % 1000003) + (hash(f.i, r.d, 22)
                     % 1000003) + (hash(f.i, r.d, 23) % 1000003)) / 1000003.0 * 2 - 3)) AS T,
               (1 + (f.e0 + f.drift_per_day * r.d) / 100)
                   * CASE WHEN f.fault = 'under' AND r.d >= f.fault_day THEN f.under_ratio
                          ELSE 1 END AS g,
               coalesce(f.fault = 'stuck' AND r.d >= f.fault_day
                        AND r.d < f.fault_day + f.stuck_days, false) AS stuck
        FROM fleet_ins f, range(0, {days}) r(d)
    ), cum AS (
        SELECT i, d, T, CASE WHEN stuck THEN 0 ELSE T * g END AS R,
               base + coalesce(sum(T) OVER w, 0) AS true_start,
               base + coalesce(sum(CASE WHEN stuck THEN 0 ELSE T * g END) OVER w, 0) AS reg_raw
        FROM daily
        WINDOW w AS (PARTITION BY i ORDER BY d ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    )
    SELECT c.i, c.d, c.T, c.R, c.true_start,
           c.reg_raw - CASE WHEN f.fault = 'reset' AND c.d >= f.fault_day
                            THEN max(CASE WHEN c.d = f.fault_day THEN c.reg_raw END)
                                     OVER (PARTITION BY c.i)
                            ELSE 0 END AS reg_start
    FROM cum c JOIN fleet_ins f USING (i);
    """


#: one segment: six hours ($q0 to $q1 quarter hours) of day $day of the whole fleet, and on
#: the day's last segment ($last) the reference readings
_FLEET_SEGMENT_SQL = f"""
WITH p AS (
    SELECT f.*, pl.T, pl.R, pl.true_start, pl.reg_start,
           pr.category, pr.quantity, pr.unit, pr.res
    FROM fleet_plan pl JOIN fleet_ins f USING (i) JOIN fleet_profiles pr USING (p)
    WHERE pl.d = $day AND NOT coalesce(f.fault = 'missing' AND f.fault_day = $day, false)
), c AS (
    SELECT p.*, q, j,
           CASE p.p WHEN 3 THEN q * 900 + j * 450 + hash(i, $day, q, j, 31) % 450
                    WHEN 4 THEN q * 900 + hash(i, $day, q, 32) % 900
                    ELSE q * 900 END AS sec
    FROM p, range($q0, $q1) s(q), range(0, 2) jj(j)
    WHERE CASE p.p WHEN 0 THEN j = 0
                   WHEN 3 THEN hash(i, $day, q, j, 33) % 1000 < 440
                   WHEN 4 THEN j = 0 AND hash(i, $day, q, 34) % 96 < 6
                   ELSE j = 0 AND q % 4 = 0 END
      AND NOT (p.p <= 2 AND hash(i, ($day * 96 + q) // 4, 17) % {GAP_ONE_IN} = 0)
), v AS (
    SELECT c.*, sec / 86400.0 AS x,
           ({EPOCH}::BIGINT + $day * 86400 + sec) * 1000
               + CASE WHEN coalesce(fault = 'clock' AND $day >= fault_day, false)
                      THEN floor(clock_ms_per_day * (($day - fault_day) * 86400 + sec) / 86400.0)
                      ELSE 0 END::BIGINT AS ms,
           reg_start + R * CASE
               WHEN coalesce(fault = 'reverse' AND $day = fault_day, false) AND q BETWEEN 40 AND 47
               THEN 2 * fleet_shape(p, 40 * 900 / 86400.0) - fleet_shape(p, sec / 86400.0)
               ELSE fleet_shape(p, sec / 86400.0) END AS reg
    FROM c
), refs AS (
    SELECT instrument, category, max(ms) + 1 AS ms, quantity || '*ref' AS quantity, unit,
           any_value(true_start) + any_value(T) * fleet_shape(any_value(p), arg_max(x, ms))
               AS reg,
           any_value(res) AS res, 1000 AS seq
    FROM v
    WHERE has_ref AND $last
    GROUP BY instrument, category, quantity, unit
)
SELECT instrument, category, to_timestamp(0) + to_milliseconds(ms) AS t, quantity,
       round(floor(reg / res) * res, 3) AS value, unit, 0::INTEGER AS status,
       $day::BIGINT AS batch_counter, seq::INTEGER AS seq,
       to_timestamp(0) + to_milliseconds(ms + 2000) AS ingested_at
FROM (
    SELECT instrument, category, ms, quantity, unit, reg, res, q * 2 + j AS seq FROM v
    UNION ALL
    SELECT * FROM refs
)
"""


def fleet_instruments(readings: int, days: int) -> int:
    """The fleet size that gives about ``readings`` readings over ``days`` days."""
    return max(10, round(readings / (FLEET_READINGS_PER_DAY * days)))


def write_fleet_lake(
    root: Path, instrument_ids: Sequence[str], days: int, workdir: Path, console: Console
) -> tuple[LakeBuild, dict[str, str]]:
    """A lake at ``root`` of the monitoring fleet (above) over ``days`` days from
    2026-01-01: instrument ``instrument_ids[i]`` has profile ``FLEET_PROFILE_OF[i % 10]``.
    Returns the build and the injected faults (instrument -> fault)."""
    spill = workdir / "duckdb-tmp"
    spill.mkdir(parents=True, exist_ok=True)
    gen = _connect(spill)
    try:
        ids = pa.table(
            {"i": pa.array(range(len(instrument_ids)), pa.int64()), "instrument": instrument_ids}
        )
        gen.register("fleet_ids_in", ids)
        gen.execute("CREATE OR REPLACE TABLE fleet_ids AS SELECT * FROM fleet_ids_in")
        gen.execute(_fleet_setup_sql(days))
        segments = [
            {"day": d, "q0": 24 * s, "q1": 24 * s + 24, "last": s == 3}
            for d in range(days)
            for s in range(4)
        ]
        build = write_lake(
            root,
            gen,
            _FLEET_SEGMENT_SQL,
            segments,
            label=f"writing {len(instrument_ids)} instruments x {days} days",
            console=console,
            prefix="synthetic",
        )
        faults = dict(
            gen.sql("SELECT instrument, fault FROM fleet_ins WHERE fault IS NOT NULL").fetchall()
        )
    finally:
        gen.close()
    return build, faults


if __name__ == "__main__":  # pragma: no cover - use bench/lake.py
    sys.exit("run bench/lake.py")
