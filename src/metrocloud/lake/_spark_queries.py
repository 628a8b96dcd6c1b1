"""The Spark SQL of :class:`~metrocloud.lake.spark_engine.SparkEngine`, one query per
method, mirroring the DuckDB queries of :mod:`metrocloud.lake.duckdb_engine` clause for
clause (the translations are listed in the engine's module doc)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "COUNTER_ANOMALIES_SQL",
    "DAILY_CONSUMPTION_SQL",
    "FLAT_RUNS_SQL",
    "FLEET_SUMMARY_SQL",
    "GRID_OFFSETS_SQL",
    "INSTRUMENT_READINGS_SQL",
    "REFERENCE_PAIRS_SQL",
]

# {src}: the DataFrame of the snapshot's files pruned to the window (bound by pyspark);
# {where}: the filters; parameters are named markers (:name), times in epoch microseconds.

INSTRUMENT_READINGS_SQL: Final = """
SELECT instrument, category, day, t, quantity, value, unit, status, batch_counter, seq,
       ingested_at
FROM {{src}}
WHERE instrument = :instrument {where}
ORDER BY quantity, t
{limit}
"""

DAILY_CONSUMPTION_SQL: Final = """
WITH daily AS (
    SELECT instrument, quantity, day,
           min_by(value, t) AS first_value,
           max_by(value, t) AS last_value,
           count(*) AS readings
    FROM {{src}}
    WHERE true {where}
    GROUP BY instrument, quantity, day
), chained AS (
    SELECT *,
           lag(day) OVER w AS previous_day,
           lag(last_value) OVER w AS previous_last
    FROM daily
    WINDOW w AS (PARTITION BY instrument, quantity ORDER BY day)
)
SELECT instrument, quantity, day, first_value, last_value,
       last_value - coalesce(
           CASE WHEN previous_day = date_sub(day, 1) THEN previous_last END, first_value
       ) AS consumption,
       readings
FROM chained
WHERE true {outer}
ORDER BY instrument, quantity, day
"""

COUNTER_ANOMALIES_SQL: Final = """
WITH steps AS (
    SELECT instrument, quantity, t, value,
           lag(t) OVER w AS previous_t,
           lag(value) OVER w AS previous_value
    FROM {{src}}
    WHERE true {where}
    WINDOW w AS (PARTITION BY instrument, quantity ORDER BY t)
), flagged AS (
    SELECT instrument, quantity, t, previous_t, previous_value, value,
           value < previous_value AS regression,
           unix_millis(t) - unix_millis(previous_t) > :gap_ms AS gap
    FROM steps
    WHERE value < previous_value OR unix_millis(t) - unix_millis(previous_t) > :gap_ms
)
SELECT instrument, quantity, 'gap' AS kind, t, previous_t, previous_value, value
FROM flagged WHERE gap
UNION ALL
SELECT instrument, quantity, 'regression' AS kind, t, previous_t, previous_value, value
FROM flagged WHERE regression
ORDER BY instrument, quantity, t, kind
"""

FLEET_SUMMARY_SQL: Final = """
SELECT category, day, count(DISTINCT instrument) AS instruments, count(*) AS readings,
       min(t) AS first_t, max(t) AS last_t
FROM {{src}}
WHERE true {where}
GROUP BY category, day
ORDER BY category, day
"""

# the as-of join as a window: registers (side 0) before references (side 1) at equal t
REFERENCE_PAIRS_SQL: Final = """
WITH ref AS (
    SELECT instrument, left(quantity, length(quantity) - :suffix_len) AS quantity, t,
           value AS reference
    FROM {{src}}
    WHERE endswith(quantity, :suffix) {where}
), reg AS (
    SELECT r.instrument, r.quantity, r.t, r.value AS register
    FROM {{src}} AS r
    LEFT SEMI JOIN (SELECT DISTINCT instrument, quantity FROM ref) AS k
      ON r.instrument = k.instrument AND r.quantity = k.quantity
    WHERE NOT endswith(r.quantity, :suffix) {where}
), stream AS (
    SELECT instrument, quantity, t, 1 AS side, reference, CAST(NULL AS DOUBLE) AS register
    FROM ref
    UNION ALL
    SELECT instrument, quantity, t, 0 AS side, CAST(NULL AS DOUBLE) AS reference, register
    FROM reg
), asof AS (
    SELECT instrument, quantity, t, side, reference,
           last(register, true) OVER (
               PARTITION BY instrument, quantity ORDER BY t, side
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
           ) AS register
    FROM stream
)
SELECT instrument, quantity, t, reference, register
FROM asof
WHERE side = 1 AND register IS NOT NULL
ORDER BY instrument, quantity, t
"""

FLAT_RUNS_SQL: Final = """
WITH steps AS (
    SELECT instrument, quantity, t, value,
           CASE WHEN value <=> lag(value) OVER w THEN 0 ELSE 1 END AS change
    FROM {{src}}
    WHERE NOT endswith(quantity, :suffix) {where}
    WINDOW w AS (PARTITION BY instrument, quantity ORDER BY t)
), runs AS (
    SELECT *, sum(change) OVER (PARTITION BY instrument, quantity ORDER BY t) AS run
    FROM steps
)
SELECT instrument, quantity, min(t) AS first_t, max(t) AS last_t, count(*) AS readings,
       any_value(value) AS value
FROM runs
GROUP BY instrument, quantity, run
HAVING unix_millis(max(t)) - unix_millis(min(t)) >= :min_ms
ORDER BY instrument, quantity, first_t
"""

GRID_OFFSETS_SQL: Final = """
WITH o AS (
    SELECT instrument, quantity, day,
           ((unix_millis(t) % :grid_ms) + :grid_ms) % :grid_ms AS r
    FROM {{src}}
    WHERE NOT endswith(quantity, :suffix) {where}
)
SELECT instrument, quantity, day, count(*) AS readings,
       count(*) FILTER (WHERE r <> 0) AS off_grid,
       CAST(median(CASE WHEN r * 2 > :grid_ms THEN r - :grid_ms ELSE r END) AS DOUBLE)
           AS median_offset_ms
FROM o
GROUP BY instrument, quantity, day
ORDER BY instrument, quantity, day
"""
