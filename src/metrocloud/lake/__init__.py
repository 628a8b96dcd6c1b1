"""The metrological data lake: readings as hive-partitioned Parquet, queried through engines.

:class:`Lake` writes (one writer process, exactly-once per segment, committed through an
atomically replaced manifest) and keeps house (compaction, retention, vacuum);
:class:`LakeEngine` is the query interface, :class:`DuckDBEngine` its embedded
implementation and ``metrocloud.lake.spark_engine.SparkEngine`` its Apache Spark one (imported
on demand: pyspark is optional); :func:`open_engine` picks one by name. See docs/lake.md.
"""

from __future__ import annotations

from metrocloud.lake.dataset import Lake, segment_file_name
from metrocloud.lake.duckdb_engine import DuckDBEngine
from metrocloud.lake.engine import (
    COUNTER_ANOMALIES_SCHEMA,
    DAILY_CONSUMPTION_SCHEMA,
    FLEET_SUMMARY_SCHEMA,
    INSTRUMENT_READINGS_SCHEMA,
    LakeEngine,
)
from metrocloud.lake.engines import ENGINES, open_engine
from metrocloud.lake.errors import EngineUnavailable, LakeCorrupt
from metrocloud.lake.maintenance import CompactionReport, RetentionReport
from metrocloud.lake.manifest import FileEntry, Manifest, Snapshot
from metrocloud.lake.schema import READINGS_SCHEMA, validate_readings

__all__ = [
    "COUNTER_ANOMALIES_SCHEMA",
    "DAILY_CONSUMPTION_SCHEMA",
    "ENGINES",
    "FLEET_SUMMARY_SCHEMA",
    "INSTRUMENT_READINGS_SCHEMA",
    "READINGS_SCHEMA",
    "CompactionReport",
    "DuckDBEngine",
    "EngineUnavailable",
    "FileEntry",
    "Lake",
    "LakeCorrupt",
    "LakeEngine",
    "Manifest",
    "RetentionReport",
    "Snapshot",
    "open_engine",
    "segment_file_name",
    "validate_readings",
]
