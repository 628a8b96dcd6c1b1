"""The lake: a hive-partitioned Parquet dataset committed through a manifest.

Layout (see docs/lake.md)::

    <root>/manifest.json                                  the committed state
    <root>/.writer.lock                                   held by the one writer process
    <root>/readings/category=<C>/day=<YYYY-MM-DD>/*.parquet

One writer process per lake (enforced with an exclusive ``flock`` on ``.writer.lock``); any
number of readers, each working on a :class:`Snapshot` of one manifest version.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metrocloud._fs import fsync_directory
from metrocloud.domain.errors import Conflict, InvalidInput
from metrocloud.lake import maintenance
from metrocloud.lake.errors import LakeCorrupt
from metrocloud.lake.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    Snapshot,
    load_manifest,
    write_manifest,
)
from metrocloud.lake.schema import (
    FILE_SCHEMA,
    SORT_KEYS,
    partition_path,
    validate_readings,
)

__all__ = ["ROW_GROUP_ROWS", "Lake", "segment_file_name"]

#: rows per Parquet row group: large enough for fast scans, small enough that the
#: instrument min/max statistics of a sorted file prune a per-instrument read
ROW_GROUP_ROWS: Final = 128 * 1024
ZSTD_LEVEL: Final = 3
LOCK_NAME: Final = ".writer.lock"
_SEGMENT_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def segment_file_name(segment_id: str) -> str:
    """The deterministic file name a segment's part gets in every partition it touches."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", segment_id)[:48].strip(".")
    digest = hashlib.sha256(segment_id.encode()).hexdigest()[:16]
    return f"s-{slug}-{digest}.parquet"


def _noop(_step: str) -> None:
    return None


class Lake:
    """One lake directory. Open with :meth:`open`; a writer handle holds the writer lock."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        *,
        lock_fd: int | None,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self._manifest = manifest
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()
        #: test hook: called after every durable step of a write, commit or maintenance
        #: (``write.temp``, ``write.renamed``, ``commit.temp``, ``commit.replaced``,
        #: ``compact.written``, ``compact.committed``, ``vacuum.deleted``); raising there
        #: simulates a crash at that point
        self.on_step = on_step or _noop

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path | str,
        *,
        writer: bool = False,
        create: bool = False,
        on_step: Callable[[str], None] | None = None,
    ) -> Lake:
        """Open the lake at ``root``; ``create`` makes a new one (and implies ``writer``).

        A writer takes the lake's writer lock; a second writer (in any process) gets
        :class:`Conflict`. A reader takes no lock and sees committed versions only.
        Raises :class:`LakeCorrupt` if the manifest is missing (without ``create``),
        unreadable, or lists a missing file.
        """
        root = Path(root).resolve()
        writer = writer or create
        lock_fd = None
        if writer:
            if create:
                root.mkdir(parents=True, exist_ok=True)
            if not root.is_dir():
                raise LakeCorrupt(f"no lake at {root}: the directory does not exist")
            lock_fd = cls._lock(root)
        try:
            if create and not (root / MANIFEST_NAME).exists():
                stray = next((root / "readings").rglob("*.parquet"), None)
                if stray is not None:
                    raise LakeCorrupt(
                        f"{root} holds Parquet files ({stray.relative_to(root)}) but no "
                        f"{MANIFEST_NAME}: the manifest was lost; refusing to start an empty "
                        "lake over them",
                        rule="lake manifest protocol (docs/lake.md)",
                    )
                write_manifest(root, Manifest())
            manifest = load_manifest(root)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(root, manifest, lock_fd=lock_fd, on_step=on_step)

    @staticmethod
    def _lock(root: Path) -> int:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(
                f"lake {root} has a writer already (another handle holds {LOCK_NAME}); a lake "
                "has exactly one writer process",
                rule="lake single-writer rule (docs/lake.md)",
            ) from None
        return fd

    @property
    def is_writer(self) -> bool:
        return self._lock_fd is not None

    def close(self) -> None:
        """Release the writer lock (a reader handle holds nothing)."""
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Lake:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The newest committed manifest this handle knows (a writer's own last commit)."""
        return self._manifest

    def snapshot(self) -> Snapshot:
        """The newest committed version, frozen: a reader re-reads the manifest file."""
        with self._mutex:
            if not self.is_writer:
                self._manifest = load_manifest(self.root, check_files=False)
            return Snapshot(self.root, self._manifest)

    # -- writing -------------------------------------------------------------------------

    def _require_writer(self, what: str) -> None:
        if not self.is_writer:
            raise InvalidInput(
                f"{what} needs the writer handle: open the lake with writer=True",
                rule="lake single-writer rule (docs/lake.md)",
            )

    def commit(self, manifest: Manifest) -> None:
        """Make ``manifest`` the committed state (writer only; maintenance uses this)."""
        self._require_writer("commit")
        if manifest.version != self._manifest.version + 1:
            raise Conflict(
                f"manifest version {manifest.version} does not follow {self._manifest.version}"
            )
        try:
            write_manifest(self.root, manifest, self.on_step)
        except BaseException:
            # whatever happened, the file on disk is the truth: one of the two versions
            self._manifest = load_manifest(self.root, check_files=False)
            raise
        self._manifest = manifest

    def write_file(self, table: pa.Table, rel: str) -> int:
        """Write ``table`` (file schema, sorted) durably at ``rel``; returns its size.

        Temp file in the target directory, fsync, ``os.replace`` to the final name, fsync the
        directory (and any directory it had to create). Not yet visible: only a commit is.
        """
        target = self.root / rel
        directory = target.parent
        created = []
        d = directory
        while not d.exists():
            created.append(d)
            d = d.parent
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{target.name}.tmp-{uuid.uuid4().hex}"
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=["instrument", "quantity", "unit"],
            write_statistics=True,
        )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.on_step("write.temp")
        os.replace(tmp, target)
        fsync_directory(directory)
        for c in created:
            fsync_directory(c.parent)
        self.on_step("write.renamed")
        return target.stat().st_size

    def write_segment(self, segment_id: str, table: pa.Table) -> list[Path]:
        """Write one acknowledged segment of readings, exactly once.

        The rows are checked (:func:`validate_readings`), split by (category, day), each part
        sorted by (instrument, quantity, t) and written to a file whose name derives from
        ``segment_id``; then one manifest commit makes all parts live together with the
        segment's id. Writing a committed ``segment_id`` again changes nothing and returns
        the paths of its files still live (none once compaction merged them); after a crash
        before the commit, writing it again replaces the invisible leftovers. Rows older than
        a retention watermark are dropped. Duplicate (instrument, quantity, t) keys inside
        the segment are refused (:class:`InvalidInput`).
        """
        self._require_writer("write_segment")
        if not isinstance(segment_id, str) or not _SEGMENT_ID.fullmatch(segment_id):
            raise InvalidInput(f"segment id {segment_id!r} must be 1 to 200 printable characters")
        with self._mutex:
            current = self._manifest
            if segment_id in current.segments:
                return [self.root / f.path for f in current.files() if f.segment == segment_id]
            valid = validate_readings(table)
            # per category, the last day the segment holds (before retention drops any):
            # retention forgets the segment once all of them are below its watermark
            last = valid.group_by("category").aggregate([("day", "max")])
            last_days = {
                str(c): d.isoformat()
                for c, d in zip(
                    last.column("category").to_pylist(),
                    last.column("day_max").to_pylist(),
                    strict=True,
                )
            }
            rows = self._retained(valid, current)
            entries: list[FileEntry] = []
            name = segment_file_name(segment_id)
            for category, day, part in _partitions(rows):
                _check_unique(part, segment_id)
                rel = f"{partition_path(category, day)}/{name}"
                size = self.write_file(_file_table(part), rel)
                entries.append(FileEntry(rel, category, day, part.num_rows, size, segment_id))
            files = current.files() + tuple(entries)
            self.commit(
                current.next(
                    datasets={**current.datasets, "readings": files},
                    segments={**current.segments, segment_id: last_days},
                )
            )
            return [self.root / e.path for e in entries]

    @staticmethod
    def _retained(table: pa.Table, manifest: Manifest) -> pa.Table:
        if not manifest.watermarks or table.num_rows == 0:
            return table
        cats = pc.unique(table.column("category")).to_pylist()
        keep = None
        for cat in cats:
            mark = manifest.watermark(cat)
            cond = pc.equal(table.column("category"), cat)
            if mark is not None:
                cond = pc.and_(
                    cond, pc.greater_equal(table.column("day"), date.fromisoformat(mark))
                )
            keep = cond if keep is None else pc.or_(keep, cond)
        return table.filter(keep) if keep is not None else table

    # -- maintenance (writer only; see metrocloud.lake.maintenance) -----------------------

    def compact(
        self,
        *,
        min_files: int = 2,
        max_rows: int = 50_000_000,
        grace: timedelta = timedelta(0),
        partitions: Collection[tuple[str, str]] | None = None,
        vacuum_after: bool = True,
    ) -> maintenance.CompactionReport:
        """Merge the files of each partition into one sorted file (see :func:`compact`).

        Holds this handle's lock (which every write takes) for the whole call: pass
        ``partitions`` (category, day) to compact some only, one at a time, while writes go on.
        """
        self._require_writer("compact")
        with self._mutex:
            return maintenance.compact(
                self,
                min_files=min_files,
                max_rows=max_rows,
                grace=grace,
                partitions=partitions,
                vacuum_after=vacuum_after,
            )

    def retain(
        self,
        keep_days: int,
        *,
        category: str | None = None,
        today: date | None = None,
        grace: timedelta = timedelta(0),
    ) -> maintenance.RetentionReport:
        """Drop the partitions more than ``keep_days`` days before ``today`` (UTC)."""
        self._require_writer("retain")
        with self._mutex:
            return maintenance.retain(self, keep_days, category=category, today=today, grace=grace)

    def vacuum(self, *, grace: timedelta = timedelta(0), now: datetime | None = None) -> list[Path]:
        """Delete files no manifest lists: retired ones past ``grace``, crash leftovers."""
        self._require_writer("vacuum")
        with self._mutex:
            return maintenance.vacuum(self, grace=grace, now=now)

    def stats(self) -> Mapping[str, int]:
        files = self._manifest.files()
        return {
            "version": self._manifest.version,
            "files": len(files),
            "rows": sum(f.rows for f in files),
            "bytes": sum(f.bytes for f in files),
            "segments": len(self._manifest.segments),
        }


def _partitions(table: pa.Table) -> list[tuple[str, str, pa.Table]]:
    """Split ``table`` by (category, day), each part sorted by (instrument, quantity, t)."""
    if table.num_rows == 0:
        return []
    ordered = table.sort_by([("category", "ascending"), ("day", "ascending"), *SORT_KEYS])
    # the groups in the sorted order (group_by itself promises no order)
    counts = (
        ordered.group_by(["category", "day"], use_threads=False)
        .aggregate([([], "count_all")])
        .sort_by([("category", "ascending"), ("day", "ascending")])
    )
    out = []
    offset = 0
    for cat, day, n in zip(
        counts.column("category").to_pylist(),
        counts.column("day").to_pylist(),
        counts.column("count_all").to_pylist(),
        strict=True,
    ):
        out.append((str(cat), day.isoformat(), ordered.slice(offset, n)))
        offset += n
    return out


def _check_unique(part: pa.Table, segment_id: str) -> None:
    n = part.num_rows
    if n < 2:
        return
    a, b = part.slice(1), part.slice(0, n - 1)
    same = pc.and_(
        pc.and_(
            pc.equal(a.column("instrument"), b.column("instrument")),
            pc.equal(a.column("quantity"), b.column("quantity")),
        ),
        pc.equal(a.column("t"), b.column("t")),
    )
    if pc.any(same).as_py():
        i = pc.index(same, True).as_py()
        row = {k: a.column(k)[i].as_py() for k in ("instrument", "quantity", "t")}
        raise InvalidInput(
            f"segment {segment_id!r} holds reading {row} more than once; a reading is "
            "identified by (instrument, quantity, t)",
            rule="lake reading identity (docs/lake.md)",
        )


def _file_table(part: pa.Table) -> pa.Table:
    """A sorted partition slice in the file schema (no partition columns, dictionary ids)."""
    cols = []
    for field in FILE_SCHEMA:
        col = part.column(field.name)
        if field.name == "instrument":
            col = pc.dictionary_encode(col)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=FILE_SCHEMA)
