"""Lake maintenance in the node's lake writer: retention, compaction of closed days, vacuum.

The flusher writes one small file per segment and partition (a node flushes about every
second under load): a node that ran for months holds thousands of files per day, and every
scan opens them all. Only the lake's one writer process may rewrite files, so the node's
lake service (:class:`~metrocloud.services.measurements.LakeService`) runs
:class:`LakeMaintenance` in a daemon thread of its own, on its writer handle, every
``lake_compact_interval_s`` seconds (setting; 0: never). One run:

1. **retention**, when ``lake_retention_days`` is set: the day partitions older than that
   are dropped (:meth:`~metrocloud.lake.Lake.retain`), once a day at most (skipped while the
   watermark already covers the cutoff);
2. **compaction of the closed days**: every partition of two files or more whose day lies
   before :func:`first_open_day` (today UTC, or yesterday during the first
   :data:`CLOSE_GRACE` after midnight, when late batches of yesterday still arrive), one
   partition per call: :meth:`~metrocloud.lake.Lake.compact` holds the handle's lock, which
   every flusher write takes, for one partition's read, sort and write only. Today's
   partition is left alone (it grows every second; rewriting it every run would cost more
   than it saves); a late batch for a compacted day adds a file there, merged next run;
3. **vacuum** of the files retired more than :data:`VACUUM_GRACE` ago (by the node's
   clock): a reader on an older snapshot (the streaming monitor reading a segment back, a
   query of another process) still finds the files it was promised.

A failure is logged (what failed and why, nothing else) and counted; the next run tries
again. It never reaches the flusher, which keeps writing between the partitions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Final

from metrocloud.lake import CompactionReport, Lake, Manifest
from metrocloud.lake.maintenance import partition_files

__all__ = [
    "CLOSE_GRACE",
    "VACUUM_GRACE",
    "LakeMaintenance",
    "compact_each",
    "compactable",
    "first_open_day",
]

log = logging.getLogger(__name__)

#: how long after midnight UTC a day still counts as open (late batches of it arrive)
CLOSE_GRACE: Final = timedelta(hours=2)
#: how long a file replaced or dropped by the node's maintenance stays on disk
VACUUM_GRACE: Final = timedelta(hours=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def first_open_day(now: datetime, grace: timedelta = CLOSE_GRACE) -> date:
    """The first day that is not closed at ``now``: the days before it are compacted."""
    return (now.astimezone(UTC) - grace).date()


def compactable(
    manifest: Manifest, *, before: date | None = None, min_files: int = 2
) -> list[tuple[str, str]]:
    """The (category, day) partitions of ``manifest`` holding ``min_files`` files or more,
    of the days before ``before`` (None: all), sorted."""
    limit = None if before is None else before.isoformat()
    return sorted(
        key
        for key, files in partition_files(manifest).items()
        if len(files) >= min_files and (limit is None or key[1] < limit)
    )


def _add(a: CompactionReport, b: CompactionReport) -> CompactionReport:
    return CompactionReport(
        a.partitions + b.partitions,
        a.files_before + b.files_before,
        a.files_after + b.files_after,
        a.rows + b.rows,
    )


def compact_each(
    lake: Lake,
    partitions: Iterable[tuple[str, str]],
    *,
    min_files: int = 2,
    grace: timedelta = timedelta(0),
    progress: Callable[[int, int], object] | None = None,
) -> CompactionReport:
    """Compact ``partitions`` of ``lake`` (a writer handle) one call each, so that the
    handle's lock is held for one partition at a time; ``progress(done, total)`` after each;
    then one vacuum with ``grace`` (it walks the whole tree: once, not once a partition).
    The first failure is raised (the partitions before it stay compacted)."""
    todo = list(partitions)
    total = CompactionReport(0, 0, 0, 0)
    for done, key in enumerate(todo, start=1):
        one = lake.compact(min_files=min_files, grace=grace, partitions=[key], vacuum_after=False)
        total = _add(total, one)
        if progress is not None:
            progress(done, len(todo))
    if total.partitions:
        lake.vacuum(grace=grace)
    return total


class LakeMaintenance:
    """The writer's maintenance runs (module docstring), in a thread of their own."""

    def __init__(
        self,
        lake: Lake,
        *,
        interval_s: float,
        retention_days: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
        close_grace: timedelta = CLOSE_GRACE,
        vacuum_grace: timedelta = VACUUM_GRACE,
    ) -> None:
        self.lake = lake
        self.interval_s = interval_s
        self.retention_days = retention_days
        self.clock = clock
        self.close_grace = close_grace
        self.vacuum_grace = vacuum_grace
        #: runs finished, partitions compacted, partition compactions that failed, other
        #: steps (retention, vacuum) that failed: since this process became the writer
        self.runs = 0
        self.compactions = 0
        self.compaction_failures = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run every ``interval_s`` seconds, the first one an interval from now (a node
        starting has its intake backlog to flush first); nothing when the interval is 0."""
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lake-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the partition being compacted, if any; the rest waits for next time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def run_once(self) -> None:
        """One run: retention, compaction of the closed days, vacuum; never raises."""
        try:
            now = self.clock()
        except Exception as exc:
            self._failed("reading the clock", exc)
            return
        if self.retention_days is not None:
            self._step("retention", lambda: self._retain(now.astimezone(UTC).date()))
        self._compact(first_open_day(now, self.close_grace))
        self._step("vacuum", lambda: self.lake.vacuum(grace=self.vacuum_grace, now=now))
        self.runs += 1

    def _retain(self, today: date) -> None:
        assert self.retention_days is not None
        cutoff = (today - timedelta(days=self.retention_days)).isoformat()
        mark = self.lake.manifest.watermarks.get("*")
        if mark is not None and mark >= cutoff:
            return  # dropped up to there already: no file below it is left
        r = self.lake.retain(self.retention_days, today=today, grace=self.vacuum_grace)
        log.info(
            "lake maintenance: retention kept %s and later, dropped %d partition(s), %d rows",
            r.cutoff,
            r.partitions,
            r.rows,
        )

    def _compact(self, before: date) -> None:
        try:
            todo = compactable(self.lake.manifest, before=before)
        except Exception as exc:
            self._failed("listing the partitions to compact", exc)
            return
        done = CompactionReport(0, 0, 0, 0)
        for category, day in todo:
            if self._stop.is_set():
                return
            try:
                # the run's vacuum follows the partitions (one walk of the tree)
                r = self.lake.compact(
                    grace=self.vacuum_grace, partitions=[(category, day)], vacuum_after=False
                )
            except Exception as exc:
                self.compaction_failures += 1
                log.error(
                    "lake maintenance: compacting partition %s/%s failed (%s: %s); "
                    "tried again next run",
                    category,
                    day,
                    type(exc).__name__,
                    exc,
                )
                continue
            self.compactions += r.partitions
            done = _add(done, r)
        if done.partitions:
            log.info(
                "lake maintenance: compacted %d partition(s) before %s, %d files into %d",
                done.partitions,
                before,
                done.files_before,
                done.files_after,
            )

    def _step(self, what: str, run: Callable[[], object]) -> None:
        try:
            run()
        except Exception as exc:
            self._failed(what, exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        log.error(
            "lake maintenance: %s failed (%s: %s); tried again next run",
            what,
            type(exc).__name__,
            exc,
        )
