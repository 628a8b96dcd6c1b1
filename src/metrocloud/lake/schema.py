"""The readings dataset: its Arrow schema and the check every written table passes.

A reading is identified by ``(instrument, quantity, t)``. ``category`` and ``day`` are the
partition columns (``readings/category=<C>/day=<YYYY-MM-DD>/``): they live in the path, not
in the Parquet files, and come back as columns on reading (hive partitioning).
"""

from __future__ import annotations

import re
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput

__all__ = [
    "FILE_SCHEMA",
    "KEY_COLUMNS",
    "PARTITION_COLUMNS",
    "READINGS_SCHEMA",
    "SORT_KEYS",
    "partition_path",
    "validate_readings",
]

_UTC_MS = pa.timestamp("ms", tz="UTC")

#: the logical schema of one reading (what queries see)
READINGS_SCHEMA: Final = pa.schema(
    [
        pa.field("instrument", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("t", _UTC_MS, nullable=False),
        pa.field("quantity", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("batch_counter", pa.int64()),
        pa.field("seq", pa.int32()),
        pa.field("ingested_at", _UTC_MS),
    ]
)

PARTITION_COLUMNS: Final = ("category", "day")
KEY_COLUMNS: Final = ("instrument", "quantity", "t")
#: the order of rows inside every file
SORT_KEYS: Final = [("instrument", "ascending"), ("quantity", "ascending"), ("t", "ascending")]

#: the schema of one Parquet file: the logical schema less the partition columns
FILE_SCHEMA: Final = pa.schema([f for f in READINGS_SCHEMA if f.name not in PARTITION_COLUMNS])

_STRINGS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_CATEGORIES = frozenset(c.value for c in InstrumentCategory)
_RULE = "lake readings schema (docs/lake.md)"


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return any(p(t.value_type) for p in _STRINGS)
    return any(p(t) for p in _STRINGS)


def _compatible(want: pa.DataType, got: pa.DataType) -> bool:
    if pa.types.is_dictionary(want) or pa.types.is_string(want):
        return _is_string(got)
    if pa.types.is_timestamp(want):
        return bool(pa.types.is_timestamp(got) and got.tz in ("UTC", "Etc/UTC", "+00:00", "Z"))
    if pa.types.is_integer(want):
        # a narrower integer widens losslessly; a wider one is checked value by value on cast
        return bool(pa.types.is_integer(got))
    if pa.types.is_floating(want):
        return bool(pa.types.is_floating(got))
    return bool(got.equals(want))


def validate_readings(table: pa.Table) -> pa.Table:
    """Check ``table`` against :data:`READINGS_SCHEMA`; return it normalized.

    ``day`` may be left out (it is derived from ``t``, in UTC); if given it must equal it.
    Strings may be plain, large, view or dictionary-encoded; timestamps of any unit in UTC
    (cast to milliseconds only if no precision is lost); integers narrower or equal. Extra
    columns are refused, so nothing is dropped unnoticed. Raises :class:`InvalidInput` naming
    the offending column. The result has plain ``string`` instruments (the writer
    dictionary-encodes per file) and the columns in schema order.
    """
    if not isinstance(table, pa.Table):
        raise InvalidInput(f"a segment is a pyarrow.Table, got {type(table).__name__}", rule=_RULE)
    names = table.column_names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInput(f"duplicate column(s) {dup} in segment", rule=_RULE)
    expected = {f.name for f in READINGS_SCHEMA}
    extra = [n for n in names if n not in expected]
    if extra:
        raise InvalidInput(
            f"unexpected column(s) {extra}: the readings schema has {sorted(expected)}",
            rule=_RULE,
        )
    columns: dict[str, pa.ChunkedArray] = {}
    for field in READINGS_SCHEMA:
        name = field.name
        if name not in names:
            if name == "day":
                continue
            raise InvalidInput(f"column {name!r} is missing (expected {field.type})", rule=_RULE)
        col = table.column(name)
        if not _compatible(field.type, col.type):
            raise InvalidInput(
                f"column {name!r} has type {col.type}, expected {field.type}",
                rule=_RULE,
            )
        if not field.nullable and col.null_count:
            raise InvalidInput(
                f"column {name!r} has {col.null_count} null value(s); it may not be null",
                rule=_RULE,
            )
        target = pa.string() if pa.types.is_dictionary(field.type) else field.type
        col = _decode(col)
        if not col.type.equals(target):
            try:
                col = col.cast(target)  # a safe cast: refuses truncation and overflow
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInput(
                    f"column {name!r} ({col.type}) does not convert to {target} "
                    f"without loss: {exc}",
                    rule=_RULE,
                ) from exc
        columns[name] = col
    derived = pc.cast(columns["t"], pa.date32())
    if "day" in columns:
        differs = pc.sum(pc.cast(pc.not_equal(columns["day"], derived), pa.int64())).as_py()
        if differs:
            raise InvalidInput(
                f"column 'day' disagrees with the UTC date of 't' in {differs} row(s)",
                rule=_RULE,
            )
    columns["day"] = derived
    cats = pc.unique(columns["category"]).to_pylist()
    unknown = sorted(c for c in cats if c not in _CATEGORIES)
    if unknown:
        raise InvalidInput(
            f"column 'category' holds unknown code(s) {unknown[:5]}; known: {sorted(_CATEGORIES)}",
            rule="MID 2014/32/EU annexes, metrocloud.domain.categories",
        )
    fields = [
        pa.field(f.name, pa.string(), nullable=f.nullable) if f.name == "instrument" else f
        for f in READINGS_SCHEMA
    ]
    return pa.Table.from_arrays([columns[f.name] for f in fields], schema=pa.schema(fields))


def _decode(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        return pa.chunked_array(
            [c.dictionary_decode() for c in col.chunks], type=col.type.value_type
        )
    return col


def partition_path(category: str, day: str) -> str:
    """The directory of one partition, relative to the lake root."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", category):
        raise InvalidInput(f"category {category!r} is not a path-safe code", rule=_RULE)
    return f"readings/category={category}/day={day}"
