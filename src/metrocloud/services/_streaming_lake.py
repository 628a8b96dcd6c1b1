"""A committed segment's readings, read back from the lake: for the streaming monitor when it
no longer holds the copy the flusher handed it (it fell behind and let go of it, or the
process restarted before it got there).

Per partition (category, day) the segment wrote:

1. while the segment's own file there is live (the manifest lists it with the segment's
   id), that file, whole;
2. once compaction merged the partition (a compacted file is listed without a segment id,
   and a reading has no segment column), the readings of the partition's compacted files
   that came from the segment's batches. The intake log keeps every batch's record
   (``intake_batches``: segment, instrument, counter, reception time, first and last
   reading time) after its wire bytes went, and each reading in the lake carries its
   batch's counter and reception time (``batch_counter``, ``ingested_at``): the readings
   whose (instrument, batch_counter, ingested_at) is one of the segment's batches are
   its readings. The batches' times say which partitions to look in.

Readings retention dropped are not read (they are gone); a segment the lake does not know
(never committed, or forgotten by retention) and a segment of no intake batch whose files
were compacted cannot be read: :class:`SegmentUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from metrocloud.domain.errors import MetrocloudError
from metrocloud.lake import Lake
from metrocloud.lake.manifest import FileEntry
from metrocloud.lake.schema import FILE_SCHEMA
from metrocloud.store.database import Database
from metrocloud.store.schema import intake_batches

__all__ = ["SegmentUnavailable", "read_lake_file", "read_segment"]

_UTC_MS = pa.timestamp("ms", tz="UTC")
_MATCH = ("instrument", "batch_counter", "_ingested_ms")


class SegmentUnavailable(MetrocloudError):
    """The lake no longer holds what is needed to read a segment's readings back."""

    code = "stream-segment-unavailable"


def _ms(iso: str) -> int:
    """A reception time in ms, as the flusher stamps ``ingested_at`` (truncated)."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return int(t.timestamp() * 1000)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def read_lake_file(root: Path, entry: FileEntry, instruments: list[str] | None = None) -> pa.Table:
    """One lake file with its category, instruments as plain strings (each file has its own
    dictionary); ``instruments``: only theirs (the files are sorted by instrument, so the
    row groups of others are skipped on their statistics)."""
    filters = None if instruments is None else [("instrument", "in", instruments)]
    table = pq.read_table(root / entry.path, schema=FILE_SCHEMA, filters=filters)
    table = table.set_column(0, "instrument", table.column("instrument").cast(pa.string()))
    return table.append_column("category", pa.array([entry.category] * table.num_rows))


def _partitions(rows: Iterable[tuple[str, int, int]]) -> set[tuple[str, str]]:
    """The (category, day) partitions batches with these (category, first_t, last_t) reach."""
    out: set[tuple[str, str]] = set()
    for category, first_t, last_t in rows:
        day, last = _day(first_t), _day(last_t)
        while day <= last:
            out.add((category, day.isoformat()))
            day += timedelta(days=1)
    return out


def read_segment(lake: Lake, db: Database, segment: str) -> pa.Table:
    """The readings committed segment ``segment`` holds in ``lake`` now (see the module
    docstring); the lake's columns plus ``category``, in no particular order."""
    manifest = lake.snapshot().manifest
    if segment not in manifest.segments:
        raise SegmentUnavailable(
            f"lake segment {segment!r} is not committed in the lake (manifest version "
            f"{manifest.version}): never written, or forgotten by retention"
        )
    files = manifest.files()
    own = [f for f in files if f.segment == segment]
    parts = [read_lake_file(lake.root, f) for f in own]
    b = intake_batches.c
    with db.read() as conn:
        batches = conn.execute(
            select(b.instrument_id, b.category, b.counter, b.received_at, b.first_t, b.last_t)
            .where(b.segment == segment)
            .order_by(b.id)
        ).all()
    if batches:
        have = {(f.category, f.day) for f in own}
        merged = sorted(_partitions((r.category, r.first_t, r.last_t) for r in batches) - have)
        if merged:
            keys = pa.table(
                {
                    "instrument": pa.array([r.instrument_id for r in batches], pa.string()),
                    "batch_counter": pa.array([r.counter for r in batches], pa.int64()),
                    "_ingested_ms": pa.array([_ms(r.received_at) for r in batches], pa.int64()),
                }
            )
            names = sorted({r.instrument_id for r in batches})
            for category, day in merged:
                for f in files:
                    if f.category == category and f.day == day and f.segment is None:
                        parts.append(_theirs(read_lake_file(lake.root, f, names), keys))
    elif not own and any(manifest.segments[segment].values()):
        raise SegmentUnavailable(
            f"lake segment {segment!r} did not come from the intake log and its files were "
            "compacted: which readings it held is no longer known"
        )
    if not parts:
        return FILE_SCHEMA.empty_table().append_column("category", pa.array([], pa.string()))
    return pa.concat_tables(parts)


def _theirs(part: pa.Table, keys: pa.Table) -> pa.Table:
    """The rows of ``part`` whose (instrument, batch_counter, ingested_at) is in ``keys``."""
    ms = part.column("ingested_at").cast(_UTC_MS).cast(pa.int64())
    tagged = part.append_column("_ingested_ms", ms)
    found = tagged.join(keys, keys=list(_MATCH), join_type="left semi", use_threads=False)
    return found.drop_columns(["_ingested_ms"]).select(part.column_names)
