"""The manifest: the one file that says which Parquet files are live.

``<root>/manifest.json`` is replaced atomically on every commit (write a temporary file,
fsync it, ``os.replace`` it over the old one, fsync the directory). A reader that opens it
sees one committed version, whole; a file the manifest does not list is invisible. The body
carries a SHA-256 over its canonical JSON, so a torn or edited manifest is refused
(:class:`LakeCorrupt`), never read as an empty lake.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from metrocloud._fs import fsync_directory
from metrocloud.lake.errors import LakeCorrupt

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "FileEntry",
    "Manifest",
    "Retired",
    "Snapshot",
    "load_manifest",
    "write_manifest",
]

FORMAT: Final = "metrocloud-lake/1"
MANIFEST_NAME: Final = "manifest.json"
_RULE = "lake manifest protocol (docs/lake.md)"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One live Parquet file of a dataset."""

    path: str  #: relative to the lake root, POSIX separators
    category: str
    day: str  #: ISO date of the partition
    rows: int
    bytes: int
    #: the segment it was written from; None for the output of a compaction
    segment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "category": self.category,
            "day": self.day,
            "rows": self.rows,
            "bytes": self.bytes,
            "segment": self.segment,
        }


@dataclass(frozen=True, slots=True)
class Retired:
    """A file that left the manifest and waits for deletion (grace for old snapshots)."""

    path: str
    retired_at: str  #: ISO timestamp, UTC


@dataclass(frozen=True, slots=True)
class Manifest:
    """One committed state of the lake."""

    version: int = 0
    committed_at: str = ""
    #: dataset name -> its live files
    datasets: Mapping[str, tuple[FileEntry, ...]] = field(default_factory=dict)
    #: committed segment id -> {category: last day it wrote}; re-writing one is a no-op
    segments: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: "*" or a category -> first day kept by retention; older rows are dropped on write
    watermarks: Mapping[str, str] = field(default_factory=dict)
    retired: tuple[Retired, ...] = ()

    def files(self, dataset: str = "readings") -> tuple[FileEntry, ...]:
        return self.datasets.get(dataset, ())

    def watermark(self, category: str) -> str | None:
        """The first day retention keeps for ``category`` (None: everything is kept)."""
        marks = [m for m in (self.watermarks.get("*"), self.watermarks.get(category)) if m]
        return max(marks) if marks else None

    def next(
        self,
        *,
        datasets: Mapping[str, tuple[FileEntry, ...]] | None = None,
        segments: Mapping[str, Mapping[str, str]] | None = None,
        watermarks: Mapping[str, str] | None = None,
        retired: tuple[Retired, ...] | None = None,
    ) -> Manifest:
        """The next version with the given parts replaced."""
        return replace(
            self,
            version=self.version + 1,
            committed_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            datasets=self.datasets if datasets is None else datasets,
            segments=self.segments if segments is None else segments,
            watermarks=self.watermarks if watermarks is None else watermarks,
            retired=self.retired if retired is None else retired,
        )

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "committed_at": self.committed_at,
            "datasets": {
                name: [f.to_json() for f in files] for name, files in sorted(self.datasets.items())
            },
            "segments": {k: dict(sorted(v.items())) for k, v in sorted(self.segments.items())},
            "watermarks": dict(sorted(self.watermarks.items())),
            "retired": [{"path": r.path, "retired_at": r.retired_at} for r in self.retired],
        }


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _checksum(body: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()


def write_manifest(
    root: Path, manifest: Manifest, step: Callable[[str], None] = lambda _: None
) -> None:
    """Commit ``manifest``: temp file, fsync, atomic replace, fsync the directory.

    ``step`` is called after each durable step (``commit.temp``, ``commit.replaced``); the
    tests raise there to simulate a crash.
    """
    body = manifest.body()
    doc = {**body, "checksum": _checksum(body)}
    data = json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"
    target = root / MANIFEST_NAME
    tmp = root / f".{MANIFEST_NAME}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    step("commit.temp")
    os.replace(tmp, target)
    fsync_directory(root)
    step("commit.replaced")


def _corrupt(path: Path, why: str) -> LakeCorrupt:
    return LakeCorrupt(
        f"lake manifest {path} is corrupt: {why}; refusing to open it as empty (restore the "
        "manifest from a backup, or re-ingest into a new lake)",
        rule=_RULE,
    )


def _req(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _corrupt(path, f"field {key!r} is {value!r}, expected {kind}")
    return value


def _iso_day(value: Any, path: Path, what: str) -> str:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise _corrupt(path, f"{what} {value!r} is not an ISO date") from None
    return str(value)


def _entries(raw: Any, path: Path, dataset: str) -> tuple[FileEntry, ...]:
    if not isinstance(raw, list):
        raise _corrupt(path, f"dataset {dataset!r} is not a list of files")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise _corrupt(path, f"dataset {dataset!r} holds a non-object entry {item!r}")
        rel = _req(item, "path", str, path)
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise _corrupt(path, f"file path {rel!r} leaves the lake root")
        seg = item.get("segment")
        if seg is not None and not isinstance(seg, str):
            raise _corrupt(path, f"segment of {rel!r} is {seg!r}")
        out.append(
            FileEntry(
                path=rel,
                category=_req(item, "category", str, path),
                day=_iso_day(item.get("day"), path, f"day of {rel!r}"),
                rows=_req(item, "rows", int, path),
                bytes=_req(item, "bytes", int, path),
                segment=seg,
            )
        )
    return tuple(out)


def load_manifest(root: Path, *, check_files: bool = True) -> Manifest:
    """Read and verify ``<root>/manifest.json``.

    Raises :class:`LakeCorrupt` when it is missing, unparsable, of another format, fails its
    checksum, or (``check_files``) lists a file that does not exist.
    """
    path = root / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LakeCorrupt(
            f"no lake manifest at {path}: {root} is not a lake (open it with create=True to "
            "make a new one)",
            rule=_RULE,
        ) from None
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _corrupt(path, f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _corrupt(path, "not a JSON object")
    if doc.get("format") != FORMAT:
        raise _corrupt(path, f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    claimed = doc.pop("checksum", None)
    if claimed != _checksum(doc):
        raise _corrupt(path, f"checksum {claimed!r} does not match its content")
    datasets_raw = _req(doc, "datasets", dict, path)
    datasets = {name: _entries(raw, path, name) for name, raw in datasets_raw.items()}
    segments_raw = _req(doc, "segments", dict, path)
    segments: dict[str, dict[str, str]] = {}
    for seg, days in segments_raw.items():
        if not isinstance(days, dict):
            raise _corrupt(path, f"segment {seg!r} record is {days!r}")
        segments[seg] = {c: _iso_day(d, path, f"segment {seg!r} day") for c, d in days.items()}
    marks = {
        k: _iso_day(v, path, f"watermark {k!r}")
        for k, v in _req(doc, "watermarks", dict, path).items()
    }
    retired = []
    for r in _req(doc, "retired", list, path):
        if not isinstance(r, dict):
            raise _corrupt(path, f"retired entry {r!r}")
        retired.append(Retired(_req(r, "path", str, path), _req(r, "retired_at", str, path)))
    manifest = Manifest(
        version=_req(doc, "version", int, path),
        committed_at=_req(doc, "committed_at", str, path),
        datasets=datasets,
        segments=segments,
        watermarks=marks,
        retired=tuple(retired),
    )
    if check_files:
        for files in datasets.values():
            for f in files:
                if not (root / f.path).is_file():
                    raise _corrupt(path, f"it lists {f.path}, which does not exist")
    return manifest


@dataclass(frozen=True)
class Snapshot:
    """A reader's view: one committed manifest version, immutable."""

    root: Path
    manifest: Manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    def files(
        self,
        dataset: str = "readings",
        *,
        categories: Iterable[str] | None = None,
        first_day: date | None = None,
        last_day: date | None = None,
    ) -> list[Path]:
        """Absolute paths of the live files, pruned by category and day (both inclusive)."""
        cats = None if categories is None else set(categories)
        lo = first_day.isoformat() if first_day else None
        hi = last_day.isoformat() if last_day else None
        return [
            self.root / f.path
            for f in self.manifest.files(dataset)
            if (cats is None or f.category in cats)
            and (lo is None or f.day >= lo)
            and (hi is None or f.day <= hi)
        ]

    def rows(self, dataset: str = "readings") -> int:
        return sum(f.rows for f in self.manifest.files(dataset))
