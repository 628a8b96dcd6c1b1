"""Compaction, retention and vacuum: the writer's housekeeping, each committed via the manifest.

- **compaction** merges the files of a partition into one file sorted by (instrument,
  quantity, t); the new file enters and the old ones leave the manifest in one commit; then
  the old ones are deleted (after ``grace``, for readers still on an older snapshot);
- **retention** drops the partitions older than N days (all categories or one), in one
  commit, and raises a watermark so that a re-written old segment cannot bring them back;
- **vacuum** deletes what no manifest lists: retired files past their grace, and the
  leftovers of a crash (temp files, parts of a segment that never committed).

A crash at any point leaves the old or the new set of files live, never both: visibility
is the manifest, and the manifest changes in one ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.manifest import MANIFEST_NAME, FileEntry, Manifest, Retired
from metrocloud.lake.schema import FILE_SCHEMA, SORT_KEYS, partition_path

if TYPE_CHECKING:
    from metrocloud.lake.dataset import Lake

__all__ = [
    "CategoryStats",
    "CompactionReport",
    "RetentionReport",
    "category_stats",
    "compact",
    "partition_files",
    "retain",
    "vacuum",
]


@dataclass(frozen=True)
class CompactionReport:
    partitions: int  #: partitions compacted
    files_before: int  #: their files before
    files_after: int  #: their files after
    rows: int  #: rows rewritten


@dataclass(frozen=True)
class RetentionReport:
    cutoff: date  #: first day kept
    partitions: int  #: partitions dropped
    rows: int  #: rows dropped


@dataclass(frozen=True)
class CategoryStats:
    """What the manifest lists for one category: the numbers compaction is judged by (many
    files per partition slow every scan down; one file per closed day is the goal)."""

    category: str
    partitions: int
    files: int
    rows: int
    bytes: int
    files_per_partition_max: int
    files_per_partition_median: float
    first_day: str
    last_day: str


def category_stats(manifest: Manifest) -> list[CategoryStats]:
    """Per category (sorted), from the manifest alone: no file is opened."""
    per: dict[str, list[list[FileEntry]]] = defaultdict(list)
    for (category, _day), files in sorted(partition_files(manifest).items()):
        per[category].append(files)
    out = []
    for category, parts in sorted(per.items()):
        counts = [len(files) for files in parts]
        out.append(
            CategoryStats(
                category=category,
                partitions=len(parts),
                files=sum(counts),
                rows=sum(f.rows for files in parts for f in files),
                bytes=sum(f.bytes for files in parts for f in files),
                files_per_partition_max=max(counts),
                files_per_partition_median=float(median(counts)),
                first_day=parts[0][0].day,
                last_day=parts[-1][0].day,
            )
        )
    return out


def _now() -> datetime:
    return datetime.now(UTC)


def _read_partition(lake: Lake, files: list[FileEntry]) -> pa.Table:
    tables = []
    for f in files:
        t = pq.read_table(lake.root / f.path, schema=FILE_SCHEMA)
        # each file has its own instrument dictionary: decode before merging
        tables.append(t.set_column(0, "instrument", t.column("instrument").cast(pa.string())))
    return pa.concat_tables(tables).sort_by(SORT_KEYS)


def partition_files(manifest: Manifest) -> dict[tuple[str, str], list[FileEntry]]:
    """The live files of ``manifest`` by partition (category, day), in manifest order."""
    groups: dict[tuple[str, str], list[FileEntry]] = defaultdict(list)
    for f in manifest.files():
        groups[(f.category, f.day)].append(f)
    return dict(groups)


def compact(
    lake: Lake,
    *,
    min_files: int = 2,
    max_rows: int = 50_000_000,
    grace: timedelta = timedelta(0),
    partitions: Collection[tuple[str, str]] | None = None,
    vacuum_after: bool = True,
) -> CompactionReport:
    """Merge every partition holding ``min_files`` or more files into sorted files of at most
    ``max_rows`` rows. One commit per partition; the replaced files are retired in that
    commit and deleted by a vacuum with ``grace`` at the end of the run.

    ``partitions``: only these (category, day) partitions (default: all). The caller holds
    the lake's mutex for the whole call, so a writer that must not wait long (the node's
    flusher) compacts one partition per call, with ``vacuum_after=False`` (the vacuum walks
    the whole ``readings/`` tree) and one :func:`vacuum` after the last.

    Memory: one partition at a time, about twice its decoded size.
    """
    if min_files < 2 or max_rows < 1:
        raise InvalidInput(f"min_files must be >= 2 and max_rows >= 1, got {min_files}, {max_rows}")
    wanted = None if partitions is None else set(partitions)
    groups = partition_files(lake.manifest)
    done = files_before = files_after = rows = 0
    for (category, day), files in sorted(groups.items()):
        if len(files) < min_files or (wanted is not None and (category, day) not in wanted):
            continue
        merged = _read_partition(lake, files)
        current = lake.manifest
        version = current.version + 1
        new: list[FileEntry] = []
        for k, offset in enumerate(range(0, max(merged.num_rows, 1), max_rows)):
            part = merged.slice(offset, max_rows)
            if part.num_rows == 0:
                continue
            rel = f"{partition_path(category, day)}/c-{version:010d}-{k:03d}.parquet"
            table = part.set_column(0, "instrument", pc.dictionary_encode(part.column(0)))
            size = lake.write_file(table.cast(FILE_SCHEMA), rel)
            new.append(FileEntry(rel, category, day, part.num_rows, size, None))
        lake.on_step("compact.written")
        old = {f.path for f in files}
        keep = tuple(f for f in current.files() if f.path not in old)
        stamp = _now().isoformat(timespec="milliseconds")
        lake.commit(
            current.next(
                datasets={**current.datasets, "readings": keep + tuple(new)},
                retired=current.retired + tuple(Retired(p, stamp) for p in sorted(old)),
            )
        )
        lake.on_step("compact.committed")
        done += 1
        files_before += len(files)
        files_after += len(new)
        rows += merged.num_rows
        del merged
    if done and vacuum_after:
        vacuum(lake, grace=grace)
    return CompactionReport(done, files_before, files_after, rows)


def retain(
    lake: Lake,
    keep_days: int,
    *,
    category: str | None = None,
    today: date | None = None,
    grace: timedelta = timedelta(0),
) -> RetentionReport:
    """Drop every partition (of ``category``, or of all) whose day is more than
    ``keep_days`` days before ``today`` (UTC): day < today - keep_days. One commit."""
    if keep_days < 0:
        raise InvalidInput(f"keep_days must be >= 0, got {keep_days}")
    cutoff = (today or _now().date()) - timedelta(days=keep_days)
    current = lake.manifest
    key = category or "*"
    marks = dict(current.watermarks)
    marks[key] = max(cutoff.isoformat(), marks.get(key, ""))

    def kept(cat: str, day: str) -> bool:
        mark = max(m for m in (marks.get("*", ""), marks.get(cat, "")))
        return day >= mark

    dropped = [f for f in current.files() if not kept(f.category, f.day)]
    live = tuple(f for f in current.files() if kept(f.category, f.day))
    # a segment whose every day is below the watermark can be forgotten: re-writing it
    # would write nothing (its rows are dropped on write); so can an empty one
    segments = {
        seg: days
        for seg, days in current.segments.items()
        if any(kept(c, d) for c, d in days.items())
    }
    stamp = _now().isoformat(timespec="milliseconds")
    lake.commit(
        current.next(
            datasets={**current.datasets, "readings": live},
            segments=segments,
            watermarks=marks,
            retired=current.retired + tuple(Retired(f.path, stamp) for f in dropped),
        )
    )
    vacuum(lake, grace=grace)
    return RetentionReport(
        cutoff, len({(f.category, f.day) for f in dropped}), sum(f.rows for f in dropped)
    )


def vacuum(
    lake: Lake, *, grace: timedelta = timedelta(0), now: datetime | None = None
) -> list[Path]:
    """Delete the files no manifest lists: retired ones retired more than ``grace`` ago, and
    every other file under ``readings/`` that is not live (crash leftovers). Writer only:
    the one writer is the only one that creates files, so nothing is in flight."""
    now = now or _now()
    current = lake.manifest
    live = {f.path for files in current.datasets.values() for f in files}
    waiting = {
        r.path for r in current.retired if datetime.fromisoformat(r.retired_at) + grace > now
    }
    deleted: list[Path] = []
    data = lake.root / "readings"
    if data.exists():
        for dirpath, _dirs, names in os.walk(data):
            for name in names:
                path = Path(dirpath) / name
                rel = path.relative_to(lake.root).as_posix()
                if rel in live or rel in waiting:
                    continue
                path.unlink()
                deleted.append(path)
                lake.on_step("vacuum.deleted")
        for dirpath, dirs, names in os.walk(data, topdown=False):
            if not dirs and not names and Path(dirpath) != data:
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
    leftover = lake.root / f".{MANIFEST_NAME}.tmp"
    if leftover.exists():
        leftover.unlink()
    pending = tuple(r for r in current.retired if r.path in waiting)
    if pending != current.retired:
        lake.commit(current.next(retired=pending))
    return deleted
