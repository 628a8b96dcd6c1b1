"""Apache Spark implementation of :class:`~metrocloud.lake.engine.LakeEngine`.

The same answers as :class:`~metrocloud.lake.duckdb_engine.DuckDBEngine`, from the same
files: every query reads exactly the Parquet files the snapshot's manifest lists (pruned by
category and day as DuckDB prunes them), with the hive partition columns ``category`` and
``day`` typed by an explicit schema. The queries are Spark SQL
(:mod:`metrocloud.lake._spark_queries`), one per method, mirroring the DuckDB ones clause
for clause; where DuckDB has a construct Spark lacks, the translation keeps the result:

- ``arg_min``/``arg_max`` are ``min_by``/``max_by``; ``epoch_ms`` is ``unix_millis``;
- the as-of join of :meth:`reference_pairs` is a window: register and reference readings of
  a register in one stream, ordered by (t, register first), each reference taking the last
  register value at or before it (``last(..., true)``);
- the previous day of :meth:`daily_consumption` comes from ``lag`` over the register's days
  instead of a self-join;
- counter anomalies take DuckDB's window plan (Spark has no ordered streaming scan).

:meth:`sql` is Spark SQL, not DuckDB's dialect, over a temporary view ``readings``.

No query does floating-point arithmetic that could differ: values are chosen (first, last,
lag), subtracted once (consumption) or are integers (milliseconds); the median offset of
:meth:`grid_offsets` is the mean of two integer milliseconds below 2^51, exact in both
engines. So the tables are equal, not approximately equal (tests/lake/test_spark_engine.py).
Two cases are unspecified in both engines alike: readings that share their key
(instrument, quantity, t), which the lake's writer refuses within a segment, and a flat run
mixing ``0.0`` and ``-0.0`` (``any_value``).

pyspark is imported lazily (``pip install 'metrocloud[spark]'``); without it, or without a
Java runtime, constructing the engine raises :class:`EngineUnavailable`. Nothing is
downloaded at run time (no ``spark.jars.packages``): Parquet is built into Spark.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake._spark_queries import (
    COUNTER_ANOMALIES_SQL,
    DAILY_CONSUMPTION_SQL,
    FLAT_RUNS_SQL,
    FLEET_SUMMARY_SQL,
    GRID_OFFSETS_SQL,
    INSTRUMENT_READINGS_SQL,
    REFERENCE_PAIRS_SQL,
)
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
    monitoring_inputs_by_queries,
    time_bounds,
)
from metrocloud.lake.errors import EngineUnavailable
from metrocloud.lake.manifest import Snapshot

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["DEFAULT_MASTER", "SMALL_LAKE_CONF", "SparkEngine", "local_session"]

DEFAULT_MASTER: Final = "local[2]"
#: for small lakes and short-lived sessions (tests, a demo): a JVM that compiles less (C1
#: only) and no whole-stage code generation. Measured on a 25 k-reading lake, 2 busy cores:
#: 12 queries in 35-50 s instead of about 100 s. Large lakes keep Spark's defaults.
SMALL_LAKE_CONF: Final[Mapping[str, str]] = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    "spark.sql.codegen.wholeStage": "false",
}
_RULE: Final = "docs/lake.md, Apache Spark engine"

# -- the session ------------------------------------------------------------------------------


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:
        raise EngineUnavailable(
            "the Spark engine needs pyspark, which is not installed: "
            "pip install 'metrocloud[spark]' (or use --engine duckdb)",
            rule=_RULE,
        ) from None
    return pyspark.sql


def local_session(
    master: str = DEFAULT_MASTER,
    *,
    driver_memory: str = "2g",
    shuffle_partitions: int = 4,
    app_name: str = "metrocloud",
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """A Spark session for the lake (or the active one, reconfigured where it can be).

    ``local[...]`` masters bind to the loopback (``SPARK_LOCAL_IP=127.0.0.1``, driver host
    and bind address). Always: no web UI and no console progress bar, session time zone
    UTC (the lake's clock), few shuffle partitions (adaptive execution coalesces them),
    log level ERROR. Nothing is fetched at run time: no ``spark.jars.packages``.
    ``conf`` adds settings (e.g. :data:`SMALL_LAKE_CONF`). Raises :class:`EngineUnavailable`
    without pyspark or a Java runtime.
    """
    sql = _pyspark()
    if _java() is None:
        raise EngineUnavailable(
            "the Spark engine needs a Java runtime (17 or later): no java on PATH and no "
            "JAVA_HOME; install one (e.g. openjdk-17-jre-headless) or use --engine duckdb",
            rule=_RULE,
        )
    builder = (
        sql.SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
    )
    for key, value in (conf or {}).items():
        if key == "spark.jars.packages":
            raise InvalidInput(
                "spark.jars.packages would download at run time; the lake engine needs "
                "nothing beyond Spark itself",
                rule=_RULE,
            )
        builder = builder.config(key, value)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            # the driver lists the few local files itself instead of in a Spark job
            .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
        )
    try:
        session: SparkSession = builder.getOrCreate()
    except Exception as exc:  # py4j/pyspark: the JVM did not start or the master refused
        raise EngineUnavailable(
            f"cannot start Apache Spark (master {master}): {type(exc).__name__}: {exc}",
            rule=_RULE,
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session


def _readings_schema() -> Any:
    t = _pyspark().types
    return t.StructType(
        [
            t.StructField("instrument", t.StringType()),
            t.StructField("t", t.TimestampType()),
            t.StructField("quantity", t.StringType()),
            t.StructField("value", t.DoubleType()),
            t.StructField("unit", t.StringType()),
            t.StructField("status", t.IntegerType()),
            t.StructField("batch_counter", t.LongType()),
            t.StructField("seq", t.IntegerType()),
            t.StructField("ingested_at", t.TimestampType()),
            # the hive partition columns, typed here rather than inferred from the paths
            t.StructField("category", t.StringType()),
            t.StructField("day", t.DateType()),
        ]
    )


class SparkEngine:
    """Apache Spark over one snapshot of a lake (see the module doc).

    ``session``: a session to use (the caller's, left running on :meth:`close`; its time
    zone is set to UTC); without one the engine builds :func:`local_session` on ``master``
    and stops it on close unless a session was active already.
    """

    def __init__(
        self,
        source: Lake | Snapshot,
        *,
        master: str = DEFAULT_MASTER,
        session: SparkSession | None = None,
    ) -> None:
        self._source = source
        if session is None:
            active = _pyspark().SparkSession.getActiveSession()
            session = local_session(master)
            self._owns = active is None
        else:
            session.conf.set("spark.sql.session.timeZone", "UTC")
            self._owns = False
        self._spark = session
        self._schema = _readings_schema()
        self._snapshot = source if isinstance(source, Snapshot) else source.snapshot()

    # -- snapshot ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def session(self) -> SparkSession:
        return self._spark

    def refresh(self) -> int:
        if isinstance(self._source, Lake):
            self._snapshot = self._source.snapshot()
        return self.version

    def _src(
        self, category: str | None, first_day: date | None, last_day: date | None
    ) -> DataFrame:
        cats = None if category is None else [category]
        files = self._snapshot.files(categories=cats, first_day=first_day, last_day=last_day)
        return self._frame(sorted(files))

    def _frame(self, files: list[Path]) -> DataFrame:
        if not files:
            return self._spark.createDataFrame([], self._schema)
        return (
            self._spark.read.schema(self._schema)
            .option("basePath", str(self._snapshot.root / "readings"))
            .parquet(*(str(f) for f in files))
        )

    def _run(self, sql: str, params: dict[str, Any], src: DataFrame, schema: pa.Schema) -> pa.Table:
        table = self._spark.sql(sql, args=params, src=src).toArrow()
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
            where += " AND quantity = :quantity"
            params["quantity"] = quantity
        if after is not None:
            where += (
                " AND (quantity > :after_quantity OR (quantity = :after_quantity"
                " AND t > timestamp_micros(:after_t)))"
            )
            params["after_quantity"] = after[0]
            after_t = after[1]  # as DuckDB compares it: a naive time is UTC
            params["after_t"] = _us(after_t if after_t.tzinfo else after_t.replace(tzinfo=UTC))
        tail = "" if limit is None else f"LIMIT {int(limit)}"
        return self._run(
            INSTRUMENT_READINGS_SQL.format(where=where, limit=tail),
            params,
            self._src(None, *_days_of(lo, hi)),
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
            where += " AND day >= :read_from"
            outer += " AND day >= :start"
            params.update(read_from=read_from, start=lo)
        if hi is not None:
            where += " AND day < :end"
            outer += " AND day < :end"
            params["end"] = hi
        if category is not None:
            where += " AND category = :category"
            params["category"] = category
        return self._run(
            DAILY_CONSUMPTION_SQL.format(where=where, outer=outer),
            params,
            self._src(category, read_from, read_to),
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
        src, where, params = self._window(start, end, category)
        params["gap_ms"] = max_gap // timedelta(milliseconds=1)
        return self._run(
            COUNTER_ANOMALIES_SQL.format(where=where), params, src, COUNTER_ANOMALIES_SCHEMA
        )

    def fleet_summary(
        self, start: date | None = None, end: date | None = None, category: str | None = None
    ) -> pa.Table:
        lo, hi = day_bounds(start, end)
        where = ""
        params: dict[str, Any] = {}
        if lo is not None:
            where += " AND day >= :start"
            params["start"] = lo
        if hi is not None:
            where += " AND day < :end"
            params["end"] = hi
        if category is not None:
            where += " AND category = :category"
            params["category"] = category
        last = None if hi is None else hi - timedelta(days=1)
        return self._run(
            FLEET_SUMMARY_SQL.format(where=where),
            params,
            self._src(category, lo, last),
            FLEET_SUMMARY_SCHEMA,
        )

    def _window(
        self, start: Bound, end: Bound, category: str | None
    ) -> tuple[DataFrame, str, dict[str, Any]]:
        lo, hi = time_bounds(start, end)
        where, params = _time_filter(lo, hi)
        if category is not None:
            where += " AND category = :category"
            params["category"] = category
        return self._src(category, *_days_of(lo, hi)), where, params

    def reference_pairs(
        self, start: Bound = None, end: Bound = None, category: str | None = None
    ) -> pa.Table:
        src, where, params = self._window(start, end, category)
        params.update(suffix=REFERENCE_SUFFIX, suffix_len=len(REFERENCE_SUFFIX))
        return self._run(
            REFERENCE_PAIRS_SQL.format(where=where),
            params,
            src,
            REFERENCE_PAIRS_SCHEMA,
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
        params.update(suffix=REFERENCE_SUFFIX, min_ms=min_duration // timedelta(milliseconds=1))
        return self._run(FLAT_RUNS_SQL.format(where=where), params, src, FLAT_RUNS_SCHEMA)

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
        params.update(suffix=REFERENCE_SUFFIX, grid_ms=grid // timedelta(milliseconds=1))
        return self._run(GRID_OFFSETS_SQL.format(where=where), params, src, GRID_OFFSETS_SCHEMA)

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
        """The five queries (those of ``tables``), one after the other (their definition)."""
        return monitoring_inputs_by_queries(
            self,
            start,
            end,
            category,
            max_gap=max_gap,
            grid=grid,
            min_duration=min_duration,
            tables=tables,
        )

    def sql(self, query: str) -> pa.Table:
        """Spark SQL (not DuckDB's dialect) over the temporary view ``readings``: the whole
        snapshot of this engine, re-bound on each call (a view of the session, so the last
        engine to call this on a shared session owns the name)."""
        self._frame(sorted(self._snapshot.files())).createOrReplaceTempView("readings")
        table: pa.Table = self._spark.sql(query).toArrow()
        return table

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns:
            self._spark.stop()
            self._owns = False

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    """Microseconds since the epoch: Spark's timestamp precision, so a bound compares
    exactly as DuckDB compares it."""
    return (t - _EPOCH) // timedelta(microseconds=1)


def _time_filter(lo: datetime | None, hi: datetime | None) -> tuple[str, dict[str, Any]]:
    where = ""
    params: dict[str, Any] = {}
    if lo is not None:
        where += " AND t >= timestamp_micros(:start)"
        params["start"] = _us(lo)
    if hi is not None:
        where += " AND t < timestamp_micros(:end)"
        params["end"] = _us(hi)
    return where, params


def _days_of(lo: datetime | None, hi: datetime | None) -> tuple[date | None, date | None]:
    """The partition days a half-open UTC time window touches."""
    first = None if lo is None else lo.date()
    last = None if hi is None else (hi - timedelta(microseconds=1)).date()
    return first, last
