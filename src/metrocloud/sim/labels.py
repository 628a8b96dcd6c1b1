"""The labels: one row per simulated instrument, the ground truth beside the data.

Schema :data:`LABELS_SCHEMA` (docs/sim.md documents every column). Written as Parquet
(``.parquet``) or JSON lines (``.jsonl``: the same columns, times as RFC 3339 strings,
dates as ``YYYY-MM-DD``), atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metrocloud.domain.errors import InvalidInput
from metrocloud.sim.generate import MeterState
from metrocloud.sim.plan import FleetPlan
from metrocloud.sim.profiles import PROFILES

__all__ = ["FAULT_TYPE", "LABELS_FORMAT", "LABELS_SCHEMA", "labels_table", "write_labels"]

LABELS_FORMAT = "metrocloud sim labels v2"
_TS = pa.timestamp("ms", tz="UTC")

#: one injected fault or manipulation; ``params`` is a JSON object (text)
FAULT_TYPE = pa.struct(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("start", _TS, nullable=False),
        pa.field("end", _TS),
        pa.field("params", pa.string(), nullable=False),
    ]
)

LABELS_SCHEMA = pa.schema(
    [
        pa.field("instrument", pa.string(), nullable=False),
        pa.field("serial", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("profile", pa.string(), nullable=False),
        pa.field("quantity", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("interval_s", pa.int32()),
        pa.field("reference_quantity", pa.string()),
        pa.field("device_key", pa.string(), nullable=False),
        pa.field("region", pa.string(), nullable=False),
        pa.field("accuracy_class", pa.string(), nullable=False),
        pa.field("mpe_percent", pa.float64(), nullable=False),
        pa.field("initial_error_percent", pa.float64(), nullable=False),
        pa.field("drift_percent_per_year", pa.float64(), nullable=False),
        pa.field("mpe_crossing_at", _TS),
        pa.field("mpe_crossing_date", pa.date32()),
        pa.field(
            "faults", pa.list_(pa.field("element", FAULT_TYPE, nullable=False)), nullable=False
        ),
        pa.field("readings_sent", pa.int64(), nullable=False),
        pa.field("batches_sent", pa.int64(), nullable=False),
        pa.field("batches_quarantined", pa.int64(), nullable=False),
        pa.field("true_consumption", pa.float64(), nullable=False),
        pa.field("registered_consumption", pa.float64(), nullable=False),
        # the balance area (plan.AREA_PROFILES) the instrument is in, and whether it is the
        # area's meter rather than one of the fleet's instruments
        pa.field("balance_area", pa.string()),
        pa.field("area_meter", pa.bool_(), nullable=False),
    ],
    metadata={"format": LABELS_FORMAT},
)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def labels_table(
    plan: FleetPlan,
    states: Sequence[MeterState],
    key_ids: Sequence[str],
    quarantined: Mapping[int, int],
) -> pa.Table:
    """The labels of ``plan`` after the run (``states`` in plan order)."""
    rows: dict[str, list[Any]] = {f.name: [] for f in LABELS_SCHEMA}
    for p, st in zip(plan.instruments, states, strict=True):
        profile = PROFILES[p.profile]
        scale = profile.scale
        rows["instrument"].append(st.instrument)
        rows["serial"].append(p.serial)
        rows["category"].append(profile.category.value)
        rows["profile"].append(profile.key)
        rows["quantity"].append(profile.quantity)
        rows["unit"].append(profile.unit)
        rows["interval_s"].append(profile.interval_ms // 1000 if profile.interval_ms else None)
        rows["reference_quantity"].append(profile.reference_quantity if p.has_reference else None)
        rows["device_key"].append(key_ids[p.index])
        rows["region"].append(p.region)
        rows["accuracy_class"].append(profile.accuracy_class)
        rows["mpe_percent"].append(p.mpe_limit)
        rows["initial_error_percent"].append(p.initial_error)
        rows["drift_percent_per_year"].append(round(p.drift_rate, 9))
        rows["mpe_crossing_at"].append(p.crossing_ms)
        rows["mpe_crossing_date"].append(None if p.crossing_ms is None else _day(p.crossing_ms))
        rows["faults"].append(
            [
                {
                    "kind": f.kind,
                    "start": f.start_ms,
                    "end": f.end_ms,
                    "params": json.dumps(dict(f.params), sort_keys=True),
                }
                for f in p.faults
            ]
        )
        rows["readings_sent"].append(st.readings)
        rows["batches_sent"].append(st.batches)
        rows["batches_quarantined"].append(quarantined.get(p.index, 0))
        rows["true_consumption"].append(round(st.true_total / scale, 6))
        rows["registered_consumption"].append(round(st.reg_total / scale, 6))
        rows["balance_area"].append(p.area)
        rows["area_meter"].append(p.area_meter)
    return pa.Table.from_pydict(rows, schema=LABELS_SCHEMA)


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_iso(v) for v in value]
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    return value


def write_labels(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` (``.parquet`` or ``.jsonl``) atomically."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".jsonl"):
        raise InvalidInput(
            f"labels file {path} must end in .parquet or .jsonl, found {path.suffix or 'none'}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".parquet":
        pq.write_table(table, tmp, compression="zstd")
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps(_iso(row), ensure_ascii=False, sort_keys=True) + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
