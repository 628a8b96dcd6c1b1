"""The query interface of the lake: what a query engine over it must answer.

:class:`LakeEngine` is implemented by :class:`~metrocloud.lake.duckdb_engine.DuckDBEngine`
(embedded, the default) and :class:`~metrocloud.lake.spark_engine.SparkEngine` (Apache Spark,
for fleets beyond one machine; equal tables). Every method
returns a ``pyarrow.Table`` of the schema named here, rows in the documented order, so that
callers and tests do not depend on the engine.

Time bounds are half-open, ``[start, end)``. A ``datetime`` must be timezone-aware; a
``date`` stands for its midnight UTC. Definitions (docs/lake.md, "Queries"):

- **daily consumption** of a register (instrument, quantity) on day D: ``last_value - base``,
  where ``base`` is the value of its last reading on D-1 if it has one, else its first
  reading on D. A day after a day without readings counts only what it measured itself (the
  missing day is a gap, reported by the anomalies). A regression makes it negative: it is
  reported as measured, not clipped.
- **counter anomalies**, per register in time order over the readings in the window:
  ``regression`` where a value is lower than the previous reading's (registers are
  cumulative), ``gap`` where more than ``max_gap`` passed since the previous reading. The
  first reading in the window has no predecessor. A reading can be both (two rows).
- **monitoring inputs** of a window and a category: the five tables batch monitoring reads
  (:class:`MonitoringInputs`), by definition those of the five methods
  (:func:`monitoring_inputs_by_queries`); an engine may answer them in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, NamedTuple, Protocol, runtime_checkable

import pyarrow as pa

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.schema import READINGS_SCHEMA

__all__ = [
    "COUNTER_ANOMALIES_SCHEMA",
    "DAILY_CONSUMPTION_SCHEMA",
    "FLAT_RUNS_SCHEMA",
    "FLEET_SUMMARY_SCHEMA",
    "GRID_OFFSETS_SCHEMA",
    "INSTRUMENT_READINGS_SCHEMA",
    "REFERENCE_PAIRS_SCHEMA",
    "REFERENCE_SUFFIX",
    "Bound",
    "LakeEngine",
    "MonitoringInputs",
    "day_bounds",
    "monitoring_inputs_by_queries",
    "monitoring_tables",
    "time_bounds",
    "whole_days",
]

Bound = date | datetime | None
_TS = pa.timestamp("ms", tz="UTC")

#: instrument_readings: the readings schema, instrument as plain string; by (quantity, t)
INSTRUMENT_READINGS_SCHEMA: Final = pa.schema(
    [
        pa.field(f.name, pa.string()) if f.name == "instrument" else f.with_nullable(True)
        for f in READINGS_SCHEMA
    ]
)
#: daily_consumption: one row per (instrument, quantity, day), in that order
DAILY_CONSUMPTION_SCHEMA: Final = pa.schema(
    [
        ("instrument", pa.string()),
        ("quantity", pa.string()),
        ("day", pa.date32()),
        ("first_value", pa.float64()),
        ("last_value", pa.float64()),
        ("consumption", pa.float64()),
        ("readings", pa.int64()),
    ]
)
#: counter_anomalies: one row per anomaly, by (instrument, quantity, t, kind)
COUNTER_ANOMALIES_SCHEMA: Final = pa.schema(
    [
        ("instrument", pa.string()),
        ("quantity", pa.string()),
        ("kind", pa.string()),  # "gap" | "regression"
        ("t", _TS),
        ("previous_t", _TS),
        ("previous_value", pa.float64()),
        ("value", pa.float64()),
    ]
)
#: fleet_summary: one row per (category, day)
FLEET_SUMMARY_SCHEMA: Final = pa.schema(
    [
        ("category", pa.string()),
        ("day", pa.date32()),
        ("instruments", pa.int64()),
        ("readings", pa.int64()),
        ("first_t", _TS),
        ("last_t", _TS),
    ]
)

#: quantity suffix of a reference (check) meter's readings of a register (docs/sim.md 3.2)
REFERENCE_SUFFIX: Final = "*ref"
#: reference_pairs: one row per reference reading with its register reading, by
#: (instrument, quantity, t); ``quantity`` is the register's
REFERENCE_PAIRS_SCHEMA: Final = pa.schema(
    [
        ("instrument", pa.string()),
        ("quantity", pa.string()),
        ("t", _TS),
        ("reference", pa.float64()),
        ("register", pa.float64()),
    ]
)
#: flat_runs: one row per run of equal consecutive values, by (instrument, quantity, first_t)
FLAT_RUNS_SCHEMA: Final = pa.schema(
    [
        ("instrument", pa.string()),
        ("quantity", pa.string()),
        ("first_t", _TS),
        ("last_t", _TS),
        ("readings", pa.int64()),
        ("value", pa.float64()),
    ]
)
#: grid_offsets: one row per (instrument, quantity, day), in that order
GRID_OFFSETS_SCHEMA: Final = pa.schema(
    [
        ("instrument", pa.string()),
        ("quantity", pa.string()),
        ("day", pa.date32()),
        ("readings", pa.int64()),
        ("off_grid", pa.int64()),
        ("median_offset_ms", pa.float64()),
    ]
)


class MonitoringInputs(NamedTuple):
    """What batch monitoring reads of one window and category (services/monitoring.py):
    the tables of the methods of the same names, with the schemas and row orders above."""

    counter_anomalies: pa.Table
    grid_offsets: pa.Table
    flat_runs: pa.Table
    reference_pairs: pa.Table
    #: over the whole days of the window (:func:`whole_days`)
    daily_consumption: pa.Table


@runtime_checkable
class LakeEngine(Protocol):
    """A query engine over one snapshot of a lake."""

    @property
    def version(self) -> int:
        """The manifest version the engine reads."""
        ...

    def refresh(self) -> int:
        """Move to the newest committed version; returns it."""
        ...

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
        """The readings of one instrument (one register if ``quantity``), t in [start, end),
        in (quantity, t) order; with ``after``, only those past that (quantity, t) key, and
        at most ``limit`` of them (keyset paging in the engine).

        Partitions outside the days of the window are not read."""
        ...

    def daily_consumption(
        self, start: date | None = None, end: date | None = None, category: str | None = None
    ) -> pa.Table:
        """Per (instrument, quantity, day), days in [start, end): first and last value,
        consumption (definition above) and the count of readings."""
        ...

    def counter_anomalies(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        max_gap: timedelta = timedelta(minutes=30),
    ) -> pa.Table:
        """Regressions and gaps of the cumulative registers, t in [start, end)."""
        ...

    def fleet_summary(
        self, start: date | None = None, end: date | None = None, category: str | None = None
    ) -> pa.Table:
        """Per (category, day): distinct instruments, readings, first and last t."""
        ...

    def reference_pairs(
        self, start: Bound = None, end: Bound = None, category: str | None = None
    ) -> pa.Table:
        """Each reference reading (quantity ``<register>*ref``, t in [start, end)) with the
        register's value at the same device time: its last reading at or before t (the
        simulator stamps the reference 1 ms after it). Register readings before ``start`` are
        not consulted; a reference without a register reading is left out."""
        ...

    def flat_runs(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        min_duration: timedelta = timedelta(hours=1),
    ) -> pa.Table:
        """Maximal runs of consecutive readings of a register (reference quantities
        excluded) with one value, t in [start, end), lasting at least ``min_duration``
        (last_t - first_t)."""
        ...

    def grid_offsets(
        self,
        start: Bound = None,
        end: Bound = None,
        category: str | None = None,
        grid: timedelta = timedelta(minutes=15),
    ) -> pa.Table:
        """Per register (reference quantities excluded) and day: readings, how many are not
        on the time grid of step ``grid`` (epoch multiples), and the median signed offset
        (ms) of the readings from their nearest grid point."""
        ...

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
        """The five tables of :func:`monitoring_inputs_by_queries` (equal to them), so that
        an engine can answer them in fewer passes over the files. ``tables``: the ones the
        caller reads (names of :class:`MonitoringInputs` fields; None: all); the others may
        come empty (an engine that runs one query per table runs only those)."""
        ...

    def sql(self, query: str) -> pa.Table:
        """Escape hatch for tests and benchmarks: raw SQL over the view ``readings``."""
        ...

    def close(self) -> None: ...


#: the bounds a window may take: a day inside the years datetime can hold, so that the
#: engines' day arithmetic (the day before, the last microsecond) stays representable
_FIRST: Final = datetime(1, 1, 2, tzinfo=UTC)
_LAST: Final = datetime(9999, 12, 30, tzinfo=UTC)


def _instant(value: date | datetime, name: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInput(
                f"{name}={value.isoformat()} is a naive datetime: give a timezone (UTC)",
                rule="lake time bounds are timezone-aware (docs/lake.md)",
            )
        try:
            out = value.astimezone(UTC)
        except OverflowError:
            out = None
    elif isinstance(value, date):
        out = datetime.combine(value, time(0), UTC)
    else:
        raise InvalidInput(f"{name} must be a date or datetime, got {type(value).__name__}")
    if out is None or not _FIRST <= out <= _LAST:
        raise InvalidInput(
            f"{name}={value.isoformat()} is outside the times a window may take: expected "
            f"{_FIRST.date()} to {_LAST.date()} (UTC)"
        )
    return out


def time_bounds(start: Bound, end: Bound) -> tuple[datetime | None, datetime | None]:
    """Normalize a half-open time window to aware UTC datetimes; refuses end < start."""
    lo = None if start is None else _instant(start, "start")
    hi = None if end is None else _instant(end, "end")
    if lo is not None and hi is not None and hi < lo:
        raise InvalidInput(f"end {hi.isoformat()} is before start {lo.isoformat()}")
    return lo, hi


def day_bounds(start: date | None, end: date | None) -> tuple[date | None, date | None]:
    """Check a half-open window of days [start, end)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, datetime) or not isinstance(value, date)):
            raise InvalidInput(f"{name} must be a date (days are UTC), got {value!r}")
    if start is not None and end is not None and end < start:
        raise InvalidInput(f"end {end} is before start {start}")
    return start, end


def whole_days(lo: datetime | None, hi: datetime | None) -> tuple[date | None, date | None]:
    """The whole UTC days inside [lo, hi), as a half-open window of days: a partial first
    or last day would look like a fleet-wide step of every instrument's consumption."""
    first = None
    if lo is not None:
        lo = lo.astimezone(UTC)
        first = lo.date() + timedelta(days=0 if lo.time() == time.min else 1)
    last = None if hi is None else hi.astimezone(UTC).date()
    if first is not None and last is not None and last < first:
        last = first  # a window inside one day holds no whole day
    return first, last


def monitoring_inputs_by_queries(
    engine: LakeEngine,
    start: Bound = None,
    end: Bound = None,
    category: str | None = None,
    *,
    max_gap: timedelta = timedelta(minutes=30),
    grid: timedelta = timedelta(minutes=15),
    min_duration: timedelta = timedelta(hours=1),
    tables: Collection[str] | None = None,
) -> MonitoringInputs:
    """The definition of :meth:`LakeEngine.monitoring_inputs`: one query per table (per
    table in ``tables`` only; the others empty)."""
    wanted = monitoring_tables(tables)
    lo, hi = time_bounds(start, end)
    first, last = whole_days(lo, hi)

    def table(name: str, schema: pa.Schema, query: Callable[[], pa.Table]) -> pa.Table:
        return query() if name in wanted else schema.empty_table()

    return MonitoringInputs(
        counter_anomalies=table(
            "counter_anomalies",
            COUNTER_ANOMALIES_SCHEMA,
            lambda: engine.counter_anomalies(lo, hi, category, max_gap),
        ),
        grid_offsets=table(
            "grid_offsets", GRID_OFFSETS_SCHEMA, lambda: engine.grid_offsets(lo, hi, category, grid)
        ),
        flat_runs=table(
            "flat_runs", FLAT_RUNS_SCHEMA, lambda: engine.flat_runs(lo, hi, category, min_duration)
        ),
        reference_pairs=table(
            "reference_pairs",
            REFERENCE_PAIRS_SCHEMA,
            lambda: engine.reference_pairs(lo, hi, category),
        ),
        daily_consumption=table(
            "daily_consumption",
            DAILY_CONSUMPTION_SCHEMA,
            lambda: engine.daily_consumption(first, last, category),
        ),
    )


def monitoring_tables(tables: Collection[str] | None) -> frozenset[str]:
    """The names of the :class:`MonitoringInputs` tables asked for (None: all); an unknown
    name is refused."""
    names = frozenset(MonitoringInputs._fields)
    if tables is None:
        return names
    unknown = sorted(set(tables) - names)
    if unknown:
        raise InvalidInput(
            f"unknown monitoring input(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    return frozenset(tables)
