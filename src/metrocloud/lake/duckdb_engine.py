"""DuckDB implementation of :class:`~metrocloud.lake.engine.LakeEngine`.

One in-process DuckDB connection per engine, bounded (``memory_limit``, default 3 GiB;
``threads``, default 2; spilling to ``<root>/_tmp/duckdb``). The engine reads exactly the
files of one manifest snapshot: the view ``readings`` is ``read_parquet([...])`` over the
snapshot's file list (hive partitioning gives ``category`` and ``day``), and each query reads
only the files of the partitions its window and category touch. The queries are written
once, here, as SQL; :meth:`DuckDBEngine.monitoring_inputs` is the exception: one pass over
the partitions in Arrow and numpy that answers five of them at once, tested equal to the
SQL; it lives in lake/_duckdb_monitoring.py ("monitoring inputs in one pass"), the method
here delegates to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import duckdb
import pyarrow as pa

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake._duckdb_monitoring import days_of, monitoring_inputs_in_one_pass
from metrocloud.lake.dataset import Lake
from metrocloud.lake.engine import (
    COUNTER_ANOMALIES_SCHEMA,
    DAILY_CONSUMPTION_SCHEMA,
    FLAT_RUNS_SCHEMA,
    FLEET_SUMMARY_SCHEMA,
    GRID_OFFSETS_SCHEMA,
    INSTRUMENT_READINGS_SCHEMA,
    REFERENCE_PAIRS_SCHEMA,
    REFERENCE_SUFFIX,
    Bound,
    MonitoringInputs,
    day_bounds,
    time_bounds,
)
from metrocloud.lake.manifest import Snapshot

__all__ = ["DEFAULT_MEMORY_LIMIT", "DuckDBEngine", "parquet_relation"]

DEFAULT_MEMORY_LIMIT: Final = "3GiB"

_COLUMNS: Final = (
    "instrument, category, day, t, quantity, value, unit, status, batch_counter, seq, ingested_at"
)
_EMPTY: Final = (
    "(SELECT NULL::VARCHAR AS instrument, NULL::VARCHAR AS category, NULL::DATE AS day, "
    "NULL::TIMESTAMPTZ AS t, NULL::VARCHAR AS quantity, NULL::DOUBLE AS value, "
    "NULL::VARCHAR AS unit, NULL::INTEGER AS status, NULL::BIGINT AS batch_counter, "
    "NULL::INTEGER AS seq, NULL::TIMESTAMPTZ AS ingested_at WHERE false)"
)
_EMPTY_WITH_FILENAME: Final = _EMPTY.replace(
    " WHERE false", ", NULL::VARCHAR AS filename WHERE false"
)

# -- the queries, written once ---------------------------------------------------------------
# {src}: the relation of the snapshot's files pruned to the window; {where}: its filters.

INSTRUMENT_READINGS_SQL: Final = """
SELECT instrument, category, day, t, quantity, value, unit, status, batch_counter, seq,
       ingested_at
FROM {src}
WHERE instrument = $instrument {where}
ORDER BY quantity, t
{limit}
"""

# per register and day: first and last value; consumption against the previous day's last
DAILY_CONSUMPTION_SQL: Final = """
WITH daily AS MATERIALIZED (
    SELECT instrument, quantity, day,
           arg_min(value, t) AS first_value,
           arg_max(value, t) AS last_value,
           count(*) AS readings
    FROM {src}
    WHERE true {where}
    GROUP BY instrument, quantity, day
)
SELECT d.instrument, d.quantity, d.day, d.first_value, d.last_value,
       d.last_value - coalesce(p.last_value, d.first_value) AS consumption,
       d.readings
FROM daily AS d
LEFT JOIN daily AS p
       ON p.instrument = d.instrument AND p.quantity = d.quantity AND p.day = d.day - 1
WHERE true {outer}
ORDER BY d.instrument, d.quantity, d.day
"""

# each reading against the previous reading of its register; keep only the anomalies
COUNTER_ANOMALIES_SQL: Final = """
WITH steps AS (
    SELECT instrument, quantity, t, value,
           lag(t) OVER w AS previous_t,
           lag(value) OVER w AS previous_value
    FROM {src}
    WHERE true {where}
    WINDOW w AS (PARTITION BY instrument, quantity ORDER BY t)
),
flagged AS MATERIALIZED (
    SELECT instrument, quantity, t, previous_t, previous_value, value,
           value < previous_value AS regression,
           epoch_ms(t) - epoch_ms(previous_t) > $gap_ms AS gap
    FROM steps
    WHERE value < previous_value OR epoch_ms(t) - epoch_ms(previous_t) > $gap_ms
)
SELECT instrument, quantity, 'gap' AS kind, t, previous_t, previous_value, value
FROM flagged WHERE gap
UNION ALL
SELECT instrument, quantity, 'regression' AS kind, t, previous_t, previous_value, value
FROM flagged WHERE regression
ORDER BY instrument, quantity, t, kind
"""

# The same answer in one pass over the files, without a sort: every file is sorted by
# (instrument, quantity, t), so in the scan order (preserve_insertion_order) each reading's
# predecessor inside its file is the row before it (streaming lag). A "run" is one register's
# rows in one file; its first reading's predecessor is the last reading of the register's
# previous run in time, stitched from the runs' edges (two rows per run). The scan keeps only
# run edges and in-run anomalies. The answer holds only if the scan order is as assumed and
# the runs of a register do not overlap in time (uncompacted files may): the engine checks
# (ANOMALY_CHECK_SQL) and falls back to COUNTER_ANOMALIES_SQL otherwise.
ANOMALY_EDGES_SQL: Final = """
CREATE OR REPLACE TEMP TABLE anomaly_edges AS
WITH s AS (
    SELECT filename AS f, instrument, quantity, t, value,
           lag(filename) OVER () AS pf, lag(instrument) OVER () AS pi,
           lag(quantity) OVER () AS pq, lag(t) OVER () AS pt, lag(value) OVER () AS pv,
           lead(filename) OVER () AS nf, lead(instrument) OVER () AS ni,
           lead(quantity) OVER () AS nq
    FROM {src}
    WHERE true {where}
),
e AS (
    SELECT f, instrument, quantity, t, value, pt, pv,
           pf IS DISTINCT FROM f OR pi IS DISTINCT FROM instrument
               OR pq IS DISTINCT FROM quantity AS run_start,
           nf IS DISTINCT FROM f OR ni IS DISTINCT FROM instrument
               OR nq IS DISTINCT FROM quantity AS run_end
    FROM s
)
SELECT f, instrument, quantity, t, value, pt, pv, run_start, run_end,
       NOT run_start AND t <= pt AS disorder
FROM e
WHERE run_start OR run_end
   OR value < pv OR epoch_ms(t) - epoch_ms(pt) > $gap_ms OR t <= pt
"""

ANOMALY_RUNS_SQL: Final = """
CREATE OR REPLACE TEMP TABLE anomaly_runs AS
WITH runs AS (
    SELECT instrument, quantity, f,
           min(t) AS first_t, arg_min(value, t) AS first_value,
           max(t) AS last_t, arg_max(value, t) AS last_value,
           count(*) FILTER (WHERE run_start) AS starts
    FROM anomaly_edges
    GROUP BY instrument, quantity, f
)
SELECT *,
       lag(last_t) OVER w AS prev_last_t,
       lag(last_value) OVER w AS prev_last_value
FROM runs
WINDOW w AS (PARTITION BY instrument, quantity ORDER BY first_t, last_t)
"""

#: zero in every column, or the stream's assumptions do not hold for this snapshot
ANOMALY_CHECK_SQL: Final = """
SELECT (SELECT count(*) FROM anomaly_edges WHERE disorder) AS disorder,
       (SELECT count(*) FROM anomaly_runs WHERE starts <> 1) AS fragmented,
       (SELECT count(*) FROM anomaly_runs WHERE first_t <= prev_last_t) AS overlapping
"""

ANOMALY_STITCH_SQL: Final = """
WITH pairs AS MATERIALIZED (
    SELECT instrument, quantity, t, pt AS previous_t, pv AS previous_value, value
    FROM anomaly_edges
    WHERE NOT run_start
    UNION ALL
    SELECT instrument, quantity, first_t, prev_last_t, prev_last_value, first_value
    FROM anomaly_runs
    WHERE prev_last_t IS NOT NULL
)
SELECT instrument, quantity, 'gap' AS kind, t, previous_t, previous_value, value
FROM pairs WHERE epoch_ms(t) - epoch_ms(previous_t) > $gap_ms
UNION ALL
SELECT instrument, quantity, 'regression' AS kind, t, previous_t, previous_value, value
FROM pairs WHERE value < previous_value
ORDER BY instrument, quantity, t, kind
"""

FLEET_SUMMARY_SQL: Final = """
SELECT category, day, count(DISTINCT instrument) AS instruments, count(*) AS readings,
       min(t) AS first_t, max(t) AS last_t
FROM {src}
WHERE true {where}
GROUP BY category, day
ORDER BY category, day
"""

# each reference reading with the register's last reading at or before it (as-of join)
REFERENCE_PAIRS_SQL: Final = """
WITH ref AS (
    SELECT instrument, left(quantity, length(quantity) - $suffix_len) AS quantity, t,
           value AS reference
    FROM {src}
    WHERE ends_with(quantity, $suffix) {where}
), reg AS (
    SELECT instrument, quantity, t, value AS register
    FROM {src}
    WHERE NOT ends_with(quantity, $suffix) {where}
)
SELECT ref.instrument, ref.quantity, ref.t, ref.reference, reg.register
FROM ref ASOF JOIN reg
  ON ref.instrument = reg.instrument AND ref.quantity = reg.quantity AND ref.t >= reg.t
ORDER BY ref.instrument, ref.quantity, ref.t
"""

# runs of equal consecutive values per register (gaps-and-islands on value changes)
FLAT_RUNS_SQL: Final = """
WITH steps AS (
    SELECT instrument, quantity, t, value,
           CASE WHEN value IS NOT DISTINCT FROM lag(value) OVER w THEN 0 ELSE 1 END AS change
    FROM {src}
    WHERE NOT ends_with(quantity, $suffix) {where}
    WINDOW w AS (PARTITION BY instrument, quantity ORDER BY t)
), runs AS (
    SELECT *, sum(change) OVER (PARTITION BY instrument, quantity ORDER BY t) AS run
    FROM steps
)
SELECT instrument, quantity, min(t) AS first_t, max(t) AS last_t, count(*) AS readings,
       any_value(value) AS value
FROM runs
GROUP BY instrument, quantity, run
HAVING epoch_ms(max(t)) - epoch_ms(min(t)) >= $min_ms
ORDER BY instrument, quantity, first_t
"""

# per register and day: the readings' offsets from the nearest point of the time grid
GRID_OFFSETS_SQL: Final = """
WITH o AS (
    SELECT instrument, quantity, day,
           ((epoch_ms(t) % $grid_ms) + $grid_ms) % $grid_ms AS r
    FROM {src}
    WHERE NOT ends_with(quantity, $suffix) {where}
)
SELECT instrument, quantity, day, count(*) AS readings,
       count(*) FILTER (WHERE r <> 0) AS off_grid,
       median(CASE WHEN r * 2 > $grid_ms THEN r - $grid_ms ELSE r END)::DOUBLE
           AS median_offset_ms
FROM o
GROUP BY instrument, quantity, day
ORDER BY instrument, quantity, day
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parquet_relation(files: Iterable[Path], *, filename: bool = False) -> str:
    """SQL for the readings in ``files`` (hive-partitioned paths), or an empty relation.

    ``filename`` adds the column ``filename`` (each row's file)."""
    paths = [_quote(str(p)) for p in files]
    if not paths:
        return _EMPTY_WITH_FILENAME if filename else _EMPTY
    return (
        f"read_parquet([{', '.join(paths)}], hive_partitioning = true, "
        "hive_types = {'category': VARCHAR, 'day': DATE}"
        + (", filename = true)" if filename else ")")
    )


class DuckDBEngine:
    """The embedded engine: DuckDB over one snapshot of a lake (see the module doc)."""

    def __init__(
        self,
        source: Lake | Snapshot,
        *,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int = 2,
        temp_directory: Path | None = None,
        anomaly_plan: Literal["auto", "window"] = "auto",
    ) -> None:
        self._source = source
        root = source.root
        tmp = temp_directory or root / "_tmp" / "duckdb"
        # DuckDB creates the spill directory itself, but not its parents; a reader without
        # write access to the lake still queries, it only cannot spill
        with contextlib.suppress(OSError):
            tmp.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(
            config={
                "threads": threads,
                "memory_limit": memory_limit,
                "temp_directory": str(tmp),
                # the anomaly stream relies on the scan order (checked, see above)
                "preserve_insertion_order": True,
            }
        )
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET parquet_metadata_cache = true")
        self._threads = threads
        #: "auto": the one-pass stream where its checks hold, else the window query;
        #: "window": always the window query
        self.anomaly_plan = anomaly_plan
        #: the plan the last counter_anomalies call used ("stream" or "window")
        self.last_anomaly_plan = ""
        #: the plan the last monitoring_inputs call used: "pass" (one pass over the
        #: partitions) or "queries" (the five queries; see lake/_duckdb_monitoring.py)
        self.last_monitoring_plan = ""
        self._snapshot = source if isinstance(source, Snapshot) else source.snapshot()
        self._create_views()

    # -- snapshot ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def refresh(self) -> int:
        if isinstance(self._source, Lake):
            self._snapshot = self._source.snapshot()
            self._create_views()
        return self.version

    def _create_views(self) -> None:
        self._con.execute(
            f"CREATE OR REPLACE VIEW readings AS SELECT {_COLUMNS} "  # noqa: S608 (quoted paths)
            f"FROM {parquet_relation(self._snapshot.files())}"
        )

    def _src(
        self,
        category: str | None,
        first_day: date | None,
        last_day: date | None,
        *,
        filename: bool = False,
    ) -> str:
        cats = None if category is None else [category]
        files = self._snapshot.files(categories=cats, first_day=first_day, last_day=last_day)
        return parquet_relation(sorted(files), filename=filename)

    def _run(self, sql: str, params: dict[str, Any], schema: pa.Schema) -> pa.Table:
        table = self._con.sql(sql, params=params or None).to_arrow_table()
        return table.cast(schema)

    # -- queries -------------------------------------------------------------------------

    def instrument_readings(
        self,
        instrument: str,
        quantity: str | None = None,
        start: Bound = None,
        end: Bound = None,
        *,
        after: tuple[str, datetime] | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        lo, hi = time_bounds(start, end)
        where, params = _time_filter(lo, hi)
        params["instrument"] = instrument
        if quantity is not None:
            where += " AND quantity = $quantity"
            params["quantity"] = quantity
        if after is not None:
            where += (
                " AND (quantity > $after_quantity OR (quantity = $after_quantity AND t > $after_t))"
            )
            params["after_quantity"], params["after_t"] = after
        tail = ""
        if limit is not None:
            tail = "LIMIT $limit"
            params["limit"] = int(limit)
        src = self._src(None, *days_of(lo, hi))
        return self._run(
            INSTRUMENT_READINGS_SQL.format(src=src, where=where, limit=tail),
            params,
            INSTRUMENT_READINGS_SCHEMA,
        )

    def daily_consumption(
        self, start: date | None = None, end: date | None = None, category: str | None = None
    ) -> pa.Table:
        lo, hi = day_bounds(start, end)
        # the day before the window supplies the first day's base
        read_from = None if lo is None else lo - timedelta(days=1)
        read_to = None if hi is None else hi - timedelta(days=1)
        where, outer = "", ""
        params: dict[str, Any] = {}
        if read_from is not None:
            where += " AND day >= $read_from"
            outer += " AND d.day >= $start"
            params.update(read_from=read_from, start=lo)
        if hi is not None:
            where += " AND day < $end"
            outer += " AND d.day < $end"
            params["end"] = hi
        if category is not None:
            where += " AND category = $category"
            params["category"] = category
        src = self._src(category, read_from, read_to)
        return self._run(
            DAILY_CONSUMPTION_SQL.format(src=src, where=where, outer=outer),
            params,
            DAILY_CONSUMPTION_SCHEMA,
        )

    def counter_anomalies(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        max_gap: timedelta = timedelta(minutes=30),
    ) -> pa.Table:
        if not isinstance(max_gap, timedelta) or max_gap < timedelta(0):
            raise InvalidInput(f"max_gap must be a non-negative timedelta, got {max_gap!r}")
        lo, hi = time_bounds(start, end)
        where, params = _time_filter(lo, hi)
        if category is not None:
            where += " AND category = $category"
            params["category"] = category
        params["gap_ms"] = max_gap // timedelta(milliseconds=1)
        days = days_of(lo, hi)
        if self.anomaly_plan != "window":
            src = self._src(category, *days, filename=True)
            self._con.execute(ANOMALY_EDGES_SQL.format(src=src, where=where), params)
            self._con.execute(ANOMALY_RUNS_SQL)
            checks = self._con.sql(ANOMALY_CHECK_SQL).fetchall()
            if checks == [(0, 0, 0)]:
                self.last_anomaly_plan = "stream"
                out = self._run(
                    ANOMALY_STITCH_SQL, {"gap_ms": params["gap_ms"]}, COUNTER_ANOMALIES_SCHEMA
                )
                self._con.execute("DROP TABLE anomaly_edges; DROP TABLE anomaly_runs")
                return out
            self._con.execute("DROP TABLE anomaly_edges; DROP TABLE anomaly_runs")
        self.last_anomaly_plan = "window"
        return self._run(
            COUNTER_ANOMALIES_SQL.format(src=self._src(category, *days), where=where),
            params,
            COUNTER_ANOMALIES_SCHEMA,
        )

    def fleet_summary(
        self, start: date | None = None, end: date | None = None, category: str | None = None
    ) -> pa.Table:
        lo, hi = day_bounds(start, end)
        where = ""
        params: dict[str, Any] = {}
        if lo is not None:
            where += " AND day >= $start"
            params["start"] = lo
        if hi is not None:
            where += " AND day < $end"
            params["end"] = hi
        if category is not None:
            where += " AND category = $category"
            params["category"] = category
        last = None if hi is None else hi - timedelta(days=1)
        src = self._src(category, lo, last)
        return self._run(
            FLEET_SUMMARY_SQL.format(src=src, where=where), params, FLEET_SUMMARY_SCHEMA
        )

    def _window(
        self, start: Bound, end: Bound, category: str | None
    ) -> tuple[str, str, dict[str, Any]]:
        lo, hi = time_bounds(start, end)
        where, params = _time_filter(lo, hi)
        if category is not None:
            where += " AND category = $category"
            params["category"] = category
        params["suffix"] = REFERENCE_SUFFIX
        return self._src(category, *days_of(lo, hi)), where, params

    def reference_pairs(
        self, start: Bound = None, end: Bound = None, category: str | None = None
    ) -> pa.Table:
        src, where, params = self._window(start, end, category)
        params["suffix_len"] = len(REFERENCE_SUFFIX)
        return self._run(
            REFERENCE_PAIRS_SQL.format(src=src, where=where), params, REFERENCE_PAIRS_SCHEMA
        )

    def flat_runs(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        min_duration: timedelta = timedelta(hours=1),
    ) -> pa.Table:
        if not isinstance(min_duration, timedelta) or min_duration < timedelta(0):
            raise InvalidInput(
                f"min_duration must be a non-negative timedelta, got {min_duration!r}"
            )
        src, where, params = self._window(start, end, category)
        params["min_ms"] = min_duration // timedelta(milliseconds=1)
        return self._run(FLAT_RUNS_SQL.format(src=src, where=where), params, FLAT_RUNS_SCHEMA)

    def grid_offsets(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        grid: timedelta = timedelta(minutes=15),
    ) -> pa.Table:
        if not isinstance(grid, timedelta) or grid < timedelta(milliseconds=1):
            raise InvalidInput(f"grid must be a timedelta of at least 1 ms, got {grid!r}")
        src, where, params = self._window(start, end, category)
        params["grid_ms"] = grid // timedelta(milliseconds=1)
        return self._run(GRID_OFFSETS_SQL.format(src=src, where=where), params, GRID_OFFSETS_SCHEMA)

    def monitoring_inputs(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        *,
        max_gap: timedelta = timedelta(minutes=30),
        grid: timedelta = timedelta(minutes=15),
        min_duration: timedelta = timedelta(hours=1),
        tables: Collection[str] | None = None,
    ) -> MonitoringInputs:
        """The five tables in one pass over the partitions (lake/_duckdb_monitoring.py),
        ``threads`` partitions at a time: all of them whatever ``tables`` asks (the pass
        reads the files once for all; a fallback to the queries runs only ``tables``)."""
        return monitoring_inputs_in_one_pass(
            self,
            start,
            end,
            category,
            threads=self._threads,
            max_gap=max_gap,
            grid=grid,
            min_duration=min_duration,
            tables=tables,
        )

    def sql(self, query: str) -> pa.Table:
        return self._con.sql(query).to_arrow_table()

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _time_filter(lo: datetime | None, hi: datetime | None) -> tuple[str, dict[str, Any]]:
    where = ""
    params: dict[str, Any] = {}
    if lo is not None:
        where += " AND t >= $start"
        params["start"] = lo
    if hi is not None:
        where += " AND t < $end"
        params["end"] = hi
    return where, params
