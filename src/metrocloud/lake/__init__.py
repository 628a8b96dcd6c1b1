"""The metrological data lake: readings as hive-partitioned Parquet, queried through engines.

:class:`Lake` writes (one writer process, exactly-once per segment, committed through an
atomically replaced manifest) and keeps house (compaction, retention, vacuum);
:class:`LakeEngine` is the query interface, :class:`DuckDBEngine` its embedded
implementation. See docs/lake.md.
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
from metrocloud.lake.errors import LakeCorrupt
from metrocloud.lake.maintenance import CompactionReport, RetentionReport
from metrocloud.lake.manifest import FileEntry, Manifest, Snapshot
from metrocloud.lake.schema import READINGS_SCHEMA, validate_readings

__all__ = [
    "COUNTER_ANOMALIES_SCHEMA",
    "DAILY_CONSUMPTION_SCHEMA",
    "FLEET_SUMMARY_SCHEMA",
    "INSTRUMENT_READINGS_SCHEMA",
    "READINGS_SCHEMA",
    "CompactionReport",
    "DuckDBEngine",
    "FileEntry",
    "Lake",
    "LakeCorrupt",
    "LakeEngine",
    "Manifest",
    "RetentionReport",
    "Snapshot",
    "segment_file_name",
    "validate_readings",
]
