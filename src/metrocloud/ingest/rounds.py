"""The intake round: what one intake write transaction accepted, kept as one row of
``intake_rounds`` until the lake flusher has its readings in the lake.

A round's ``data`` has one of two formats (``intake_rounds.format``):

- ``arrow`` (the intake's signed batches): the accepted batches' readings, decoded, as an
  Arrow IPC stream of :data:`ROUND_SCHEMA`, one row per batch (its readings as lists). The
  intake parsed every payload to check it, so it hands the readings on decoded: the flusher
  neither decodes nor parses a payload again, and the log holds a few bytes per reading
  instead of the base64 wire line.
- ``wires`` (imported OCMF records, and lines moved over by migration 0011): the exact
  wire lines, each after its length (4 bytes, big-endian), in the order of the batches' ids;
  the flusher checks each payload against the digest recorded with its batch.

Either way the round records the SHA-256 of its ``data`` (``intake_rounds.digest``), which
the flusher checks before it uses a byte of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from pyarrow import ipc

__all__ = [
    "ARROW",
    "ROUND_SCHEMA",
    "WIRES",
    "RoundBatch",
    "arrow_round",
    "join_round",
    "read_arrow_round",
    "round_digest",
    "round_table",
    "split_round",
]

ARROW = "arrow"
WIRES = "wires"

#: one row per accepted batch; ``ingested_at`` is when the node received it (epoch ms)
ROUND_SCHEMA = pa.schema(
    [
        pa.field("instrument", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("batch_counter", pa.int64(), nullable=False),
        pa.field("quantity", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("ingested_at", pa.int64(), nullable=False),
        pa.field("t", pa.list_(pa.int64()), nullable=False),
        pa.field("value", pa.list_(pa.float64()), nullable=False),
        pa.field("status", pa.list_(pa.int32()), nullable=False),
    ]
)

#: (instrument, category, key id, counter, quantity, unit, received ms, t, value, status)
RoundBatch = tuple[str, str, str, int, str, str, int, list[int], list[Any], list[int]]


def round_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def arrow_round(batches: Sequence[RoundBatch]) -> bytes:
    """The ``arrow`` data of ``batches`` (in order): the readings of all batches are
    gathered into one list per column and converted once, not batch by batch."""
    t: list[int] = []
    value: list[Any] = []
    status: list[int] = []
    offsets = [0]
    for b in batches:
        t += b[7]
        value += b[8]
        status += b[9]
        offsets.append(len(t))
    if len(value) != len(t) or len(status) != len(t):
        raise ValueError("a batch's t, value and status columns differ in length")
    instrument, category, key_id, counter, quantity, unit, received = (
        [b[i] for b in batches] for i in range(7)
    )
    table = round_table(
        instrument,
        category,
        key_id,
        counter,
        quantity,
        unit,
        received,
        pa.array(offsets, pa.int32()),
        pa.array(t, pa.int64()),
        pa.array(value, pa.float64()),
        pa.array(status, pa.int32()),
    )
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, ROUND_SCHEMA) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def round_table(
    instrument: Sequence[Any],
    category: Sequence[Any],
    key_id: Sequence[Any],
    batch_counter: Sequence[Any],
    quantity: Sequence[Any],
    unit: Sequence[Any],
    ingested_at: Sequence[Any],
    offsets: pa.Array,
    t: pa.Array,
    value: pa.Array,
    status: pa.Array,
) -> pa.Table:
    """Batches in :data:`ROUND_SCHEMA`: the per-batch columns, and the readings of all of
    them (``t``, ``value``, ``status``), batch ``i`` from ``offsets[i]`` to ``offsets[i+1]``."""
    return pa.Table.from_arrays(
        [
            pa.array(instrument, pa.string()),
            pa.array(category, pa.string()),
            pa.array(key_id, pa.string()),
            pa.array(batch_counter, pa.int64()),
            pa.array(quantity, pa.string()),
            pa.array(unit, pa.string()),
            pa.array(ingested_at, pa.int64()),
            pa.ListArray.from_arrays(offsets, t),
            pa.ListArray.from_arrays(offsets, value),
            pa.ListArray.from_arrays(offsets, status),
        ],
        schema=ROUND_SCHEMA,
    )


def read_arrow_round(data: bytes) -> pa.Table:
    """The batches of an ``arrow`` round; ValueError unless the data is an Arrow IPC stream
    of :data:`ROUND_SCHEMA`."""
    try:
        table = ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"not an Arrow IPC stream: {exc}") from None
    if not table.schema.equals(ROUND_SCHEMA):
        raise ValueError(f"the round's schema is not the intake's: {table.schema}")
    return table


def join_round(lines: Iterable[bytes]) -> bytes:
    """The ``wires`` data of ``lines``: each line after its length (4 bytes, big-endian),
    so a line may hold any byte (an imported OCMF record may span lines)."""
    return b"".join([len(line).to_bytes(4, "big") + line for line in lines])


def split_round(data: bytes) -> list[bytes]:
    """The wire lines of :func:`join_round`'s bytes; ValueError if they are cut short."""
    view = memoryview(data)
    out: list[bytes] = []
    at, end = 0, len(data)
    while at < end:
        if at + 4 > end:
            raise ValueError(f"round bytes end inside a length prefix at byte {at}")
        size = int.from_bytes(view[at : at + 4], "big")
        at += 4
        if at + size > end:
            raise ValueError(f"round bytes end inside a {size}-byte line at byte {at}")
        out.append(bytes(view[at : at + size]))
        at += size
    return out
