"""The streaming monitor off the lake flusher's critical path: the flusher's hook only
queues the segment, a thread of its own takes the queue in commit order.

Why: observing a segment (the registers' state read and upserted, the alerts) is work of
the same order as writing it; inside the flusher's commit it slowed the whole intake down
(docs/monitoring.md, "Streaming"). What the flusher promised the synchronous monitor still
holds:

- *no committed segment is missed*: :meth:`StreamWorker.enqueue` (the hook) adds the
  segment to ``stream_queue`` before it returns, and the flusher deletes the segment's
  intake rounds only after that; a crash before the row is committed makes the flusher redo
  the segment and call the hook again. The row goes in the transaction that takes the
  segment in, so after a crash or a stop without draining, the next start catches up on
  exactly the segments not taken in;
- *commit order*: the queue's positions are the hook's call order; the thread takes the
  first segment not poisoned, and a segment that fails blocks those behind it while it is
  retried (with an exponential backoff), as taking a later one first would make the
  failed one's readings *late*. After :attr:`Retry.attempts` failed tries it is
  *poisoned*: kept with its error (``stream_queue``, :func:`stream_backlog`, /metrics)
  and passed over;
- *bounded memory*: the hook keeps the flusher's table for the thread as long as the
  readings held stay under ``max_buffered_readings``; beyond that (the monitor fell
  behind) it keeps the id only, and the thread reads the segment back from the lake
  (:func:`~metrocloud.services._streaming_lake.read_segment`) when its turn comes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pyarrow as pa

from metrocloud.ingest.intake import TURNS
from metrocloud.lake import Lake
from metrocloud.services._streaming_lake import read_segment
from metrocloud.services._streaming_queue import (
    Queued,
    add_queued,
    drop_queued,
    queue_counts,
    queue_head,
    record_failure,
)
from metrocloud.services._streaming_store import iso_ms, ms_of
from metrocloud.store.database import Database
from metrocloud.store.turns import write_turn

__all__ = ["Retry", "StreamStats", "StreamWorker"]

log = logging.getLogger(__name__)

#: the longest error message kept with a failed segment
_ERROR_CHARS = 2000


class _Seen(Protocol):
    @property
    def readings(self) -> int: ...
    @property
    def repeated(self) -> bool: ...


class _Monitor(Protocol):
    """What the thread needs of :class:`~metrocloud.services.streaming.StreamMonitor`."""

    db: Database

    def observe(self, segment: str, table: pa.Table) -> _Seen: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How a segment that failed is tried again: after ``first_s``, doubling up to
    ``max_s``; poisoned once it failed ``attempts`` times (by default after about two
    minutes: a database away for a moment does not poison the segment at the head)."""

    attempts: int = 8
    first_s: float = 1.0
    max_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** max(0, failures - 1)))


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStats:
    """What /metrics reports of the monitor (docs/ingest.md, "Metrics")."""

    #: segments and readings taken in by this worker since it started
    segments_observed: int = 0
    readings_observed: int = 0
    #: failed tries since it started (each retry of a segment counts)
    failures: int = 0
    #: segments committed and not yet taken in (poisoned ones left out), their readings
    backlog: int = 0
    backlog_readings: int = 0
    #: segments given up after their last try
    poisoned: int = 0
    #: readings held in memory for the thread (the rest is read back from the lake)
    buffered_readings: int = 0
    #: segments read back from the lake
    reread: int = 0
    #: the last segment taken in: seconds from its commit to its observation
    lag_s: float = 0.0


class StreamWorker:
    """Queues the segments the flusher commits and observes them in a thread of its own
    (module docstring). ``enqueue`` is the flusher's ``on_committed`` hook; ``lake`` is the
    lake it commits to (read back from when the copy is not held)."""

    def __init__(
        self,
        monitor: _Monitor,
        lake: Lake,
        *,
        retry: Retry = Retry(),
        max_buffered_readings: int = 1_000_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        idle_s: float = 1.0,
    ) -> None:
        self.monitor = monitor
        self.db = monitor.db
        self.lake = lake
        self.retry = retry
        self.max_buffered_readings = max_buffered_readings
        self.clock = clock
        self.idle_s = idle_s
        self._cond = threading.Condition(threading.Lock())
        self._buffer: dict[str, pa.Table] = {}
        self._buffered = 0
        self._stopping = False
        self._drain = True
        self._thread: threading.Thread | None = None
        self._observed = self._readings = self._failures = self._reread = 0
        self._lag_s = 0.0

    def _now(self) -> str:
        return iso_ms(round(self.clock().timestamp() * 1000))

    # -- the flusher's side ------------------------------------------------------------------

    def enqueue(self, segment: str, table: pa.Table) -> None:
        """The flusher's hook: queue ``segment`` durably (one small transaction), keep its
        table while the memory budget allows, wake the thread. Idempotent per id."""
        n = int(table.num_rows)
        with write_turn(self.db, priority=True), self.db.write() as conn, TURNS.writing():
            add_queued(conn, segment, readings=n, at=self._now())
        with self._cond:
            if segment not in self._buffer and self._buffered + n <= self.max_buffered_readings:
                self._buffer[segment] = table
                self._buffered += n
            self._cond.notify_all()

    __call__ = enqueue

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Take the queue in a thread: first what a previous run left, then what comes."""
        if self._thread is not None:
            return
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="stream-monitor", daemon=True)
        self._thread.start()

    def stop(self, *, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop the thread: with ``drain``, once the queue holds nothing it can take now
        (within ``timeout_s``); without, after the segment in hand. What is left stays
        queued for the next start."""
        with self._cond:
            self._stopping = True
            self._drain = drain
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout_s)
        if thread.is_alive():
            with self._cond:
                self._drain = False
                self._cond.notify_all()
            thread.join()

    def run_pending(self) -> int:
        """Take, in this thread, every queued segment that is due now; the number taken in
        or failed. For a process without the thread (a one-off flush)."""
        done = 0
        while self.step() == 0.0:
            done += 1
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping and not self._drain:
                    return
            try:
                wait = self.step()
            except Exception:  # the database is away: the queue waits for it
                log.exception("streaming monitor: reading its queue failed; retrying")
                wait = self.retry.first_s
            if wait == 0.0:
                continue
            with self._cond:
                if self._stopping and (wait is None or not self._drain):
                    return
                self._cond.wait(self.idle_s if wait is None else min(wait, self.idle_s))

    def step(self) -> float | None:
        """Take in (or fail) the first queued segment: 0.0 when one was tried, the seconds
        until the first may be tried again, None when nothing is queued."""
        with self.db.read() as conn:
            head = queue_head(conn)
        if head is None:
            return None
        if head.next_try_at is not None:
            wait_ms = ms_of(head.next_try_at) - round(self.clock().timestamp() * 1000)
            if wait_ms > 0:
                return wait_ms / 1000
        with self._cond:
            table = self._buffer.get(head.segment)
        try:
            if table is None:
                table = read_segment(self.lake, self.db, head.segment)
                self._reread += 1
            seen = self.monitor.observe(head.segment, table)
            if seen.repeated:  # taken in before (the flusher redid it): only the row goes
                with write_turn(self.db), self.db.write() as conn, TURNS.writing():
                    drop_queued(conn, head.segment)
        except Exception as exc:
            self._failed(head, exc)
            return 0.0
        self._release(head.segment)
        self._observed += 1
        self._readings += 0 if seen.repeated else seen.readings
        self._lag_s = max(0.0, (self.clock().timestamp() * 1000 - ms_of(head.committed_at)) / 1000)
        return 0.0

    def _release(self, segment: str) -> None:
        with self._cond:
            table = self._buffer.pop(segment, None)
            if table is not None:
                self._buffered -= int(table.num_rows)

    def _failed(self, head: Queued, exc: Exception) -> None:
        self._failures += 1
        attempts = head.attempts + 1
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        now = self.clock()
        if attempts >= self.retry.attempts:
            poisoned_at: str | None = iso_ms(round(now.timestamp() * 1000))
            next_try: str | None = None
            log.error(
                "streaming monitor: segment %s failed %d times, poisoned (no more tries): %s",
                head.segment,
                attempts,
                error,
            )
            self._release(head.segment)
        else:
            poisoned_at = None
            delay = timedelta(seconds=self.retry.delay_s(attempts))
            next_try = iso_ms(round((now + delay).timestamp() * 1000))
            log.warning(
                "streaming monitor: segment %s failed (try %d of %d), next try at %s: %s",
                head.segment,
                attempts,
                self.retry.attempts,
                next_try,
                error,
            )
        with write_turn(self.db), self.db.write() as conn, TURNS.writing():
            record_failure(
                conn,
                head.segment,
                attempts=attempts,
                error=error,
                next_try_at=next_try,
                poisoned_at=poisoned_at,
            )

    # -- what it reports -----------------------------------------------------------------------

    def stats(self) -> StreamStats:
        with self.db.read() as conn:
            backlog, backlog_readings, poisoned = queue_counts(conn)
        with self._cond:
            buffered = self._buffered
        return StreamStats(
            segments_observed=self._observed,
            readings_observed=self._readings,
            failures=self._failures,
            backlog=backlog,
            backlog_readings=backlog_readings,
            poisoned=poisoned,
            buffered_readings=buffered,
            reread=self._reread,
            lag_s=self._lag_s,
        )
