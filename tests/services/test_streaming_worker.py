"""Streaming monitoring off the flusher's critical path (services/_streaming_worker.py).

- a monitor that blocks does not hold the flusher back: it commits every segment and drops
  the wire rows; the monitor catches up afterwards and raises what the synchronous monitor
  raises;
- a crash with segments queued and not taken in: the next start reads them back from the
  lake (whole files, or out of compacted files by their batches) and raises the same alerts;
- a segment that fails is retried after its backoff, later ones wait (commit order), and
  after its last try it is poisoned: kept with its error, passed over, counted;
- memory stays within the budget: beyond it the segments are read back from the lake;
- /metrics shows the monitor's work, its backlog and its poisoned segments.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from metrocloud.api.app import create_app
from metrocloud.device import StatusFlag
from metrocloud.ingest import Intake, IntakeLimits, LakeFlusher
from metrocloud.lake import Lake
from metrocloud.services import instruments as inst
from metrocloud.services._streaming_queue import add_queued, record_failure
from metrocloud.services.streaming import (
    Observed,
    Retry,
    SegmentUnavailable,
    StreamMonitor,
    StreamWorker,
    stream_backlog,
)
from metrocloud.store.database import Database
from metrocloud.store.schema import intake_rounds, stream_alerts, stream_queue, stream_segments
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey
from tests.conftest import World, software
from tests.ingest.test_intake import NOW, STEP, Meter
from tests.services.test_streaming import QTY, T0, _database, meter, segment

SEAL = int(StatusFlag.SEAL_BROKEN)


def own_batch(m: Meter, values: list[float], status: list[int] | None = None) -> bytes:
    """The device's next batch with these values (its chain moves on)."""
    n = len(values)
    signed = m.batch(n, value=values, status=status or [0] * n)
    m.counter += 1
    m.prev = signed.digest
    m.next_t += n * STEP
    return signed.wire()


#: six batches: a counter reset, a broken seal, a reverse flow, and plain ones
BATCHES: list[tuple[list[float], list[int] | None]] = [
    ([100, 101, 102, 103], None),
    ([104, 105, 1, 2], None),  # 105 -> 1: a counter reset
    ([3, 4, 5, 6], None),
    ([7, 8, 9, 10], [0, SEAL, 0, 0]),
    ([9, 10, 11, 12], None),  # 10 -> 9: a reverse flow
    ([13, 14, 15, 16], None),
]


class Fx:
    """A registered meter whose six batches are accepted, a lake, and what the flusher
    handed over (to replay through a synchronous monitor for the expected alerts)."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world = world
        self.db = world.node.db
        self.tmp_path = tmp_path
        cert = world.certificate(world.nb1, world.man1)
        key = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
        draft = inst.InstrumentDraft(serial="W-1", certificate_id=cert["id"], region="DE21",
                                     device_keys=(key.public_key.to_spki_b64(),))  # fmt: skip
        refs, _ = inst.register_instruments(world.node, world.man1.actor, [draft])
        self.meter = Meter(refs[0]["id"], key, software("1.0.0").checksum)
        intake = Intake(self.db, clock=lambda: NOW, limits=IntakeLimits(cache_seconds=0))
        # one submission (one intake round, so one lake segment) per batch
        outcomes = [intake.submit([own_batch(self.meter, v, s)], "http")[0] for v, s in BATCHES]
        assert [o.status for o in outcomes] == ["accepted"] * len(BATCHES)
        self.lake = Lake.open(tmp_path / "lake", create=True)
        self.handed: list[tuple[str, pa.Table]] = []

    def flush(self, hook: Callable[[str, pa.Table], object]) -> int:
        def capture(segment_id: str, table: pa.Table) -> None:
            self.handed.append((segment_id, table))
            hook(segment_id, table)

        flusher = LakeFlusher(self.db, self.lake, max_batches=1, on_committed=capture)
        return flusher.flush_all()

    def expected(self) -> list[tuple[Any, ...]]:
        """The alerts the synchronous monitor raises on the same segments, on a new database."""
        db = _database(self.tmp_path / "reference")
        monitor = StreamMonitor(db)
        for segment_id, table in self.handed:
            monitor.observe(segment_id, table)
        try:
            return alerts(db)
        finally:
            db.dispose()

    def segments(self) -> list[tuple[str, int]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(stream_segments.c.segment, stream_segments.c.readings).order_by(
                    stream_segments.c.segment
                )
            )
            return [tuple(r) for r in rows]

    def queued(self) -> list[str]:
        with self.db.read() as conn:
            q = stream_queue.c
            return list(conn.execute(select(q.segment).order_by(q.position)).scalars())


def alerts(db: Database) -> list[tuple[Any, ...]]:
    """Every alert, less the node's own timestamps (raised_at, updated_at)."""
    a = stream_alerts.c
    with db.read() as conn:
        rows = conn.execute(
            select(
                a.instrument, a.kind, a.severity, a.at, a.last_at, a.count, a.evidence, a.segment
            ).order_by(a.instrument, a.kind)
        ).all()
    return [tuple(r) for r in rows]


@pytest.fixture
def fx(world: World, tmp_path: Path) -> Iterator[Fx]:
    f = Fx(world, tmp_path)
    yield f
    f.lake.close()


def worker(fx: Fx, monitor: StreamMonitor | None = None, **kw: Any) -> StreamWorker:
    return StreamWorker(monitor or StreamMonitor(fx.db, priority=False), fx.lake, **kw)


class Gate(StreamMonitor):
    """A monitor that waits at the door of each segment until the gate opens."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, priority=False)
        self.entered = threading.Event()
        self.open = threading.Event()

    def observe(self, segment: str, table: pa.Table) -> Observed:
        self.entered.set()
        assert self.open.wait(60), "the test never opened the gate"
        return super().observe(segment, table)


# -- (1) the flusher does not wait for the monitor ---------------------------------------------


def test_a_blocked_monitor_does_not_hold_the_flusher_back(fx: Fx) -> None:
    gate = Gate(fx.db)
    w = worker(fx, gate)
    w.start()
    try:
        assert fx.flush(w.enqueue) == 24  # all six segments, while the monitor is stuck
        assert gate.entered.wait(30) and not gate.open.is_set()
        with fx.db.read() as conn:
            assert conn.execute(select(func.count()).select_from(intake_rounds)).scalar() == 0
        assert fx.segments() == []  # none taken in yet
        assert fx.queued() == [s for s, _ in fx.handed] and len(fx.handed) == 6
        stats = w.stats()
        assert (stats.backlog, stats.backlog_readings, stats.buffered_readings) == (6, 24, 24)
        gate.open.set()
    finally:
        gate.open.set()
        w.stop(drain=True)
    assert fx.queued() == [] and w.stats().segments_observed == 6
    assert fx.segments() == sorted((s, t.num_rows) for s, t in fx.handed)
    got = alerts(fx.db)
    assert got == fx.expected()
    assert {(a[1], a[5]) for a in got} == {("counter_reset", 1), ("seal_broken", 1),
                                           ("reverse_flow", 1)}  # fmt: skip
    assert w.stats().buffered_readings == 0 and w.stats().reread == 0


# -- (2) a crash with segments queued ----------------------------------------------------------


@pytest.mark.parametrize("compacted", [False, True], ids=["files", "compacted"])
def test_after_a_crash_the_next_start_catches_up_from_the_lake(fx: Fx, compacted: bool) -> None:
    first = worker(fx)  # never started: the process dies with six segments queued
    fx.flush(first.enqueue)
    assert first.step() == 0.0 and first.step() == 0.0  # two taken in before the crash
    assert fx.queued() == [s for s, _ in fx.handed[2:]]
    first.enqueue(*fx.handed[3])  # the flusher redoes a segment: it keeps its place
    assert fx.queued() == [s for s, _ in fx.handed[2:]]
    del first
    if compacted:  # the segments' own files are merged away: found by their batches
        report = fx.lake.compact()
        assert report.partitions >= 1
        assert any(f.segment is None for f in fx.lake.manifest.files())
    restarted = worker(fx)
    restarted.start()
    restarted.stop(drain=True)
    assert fx.queued() == [] and restarted.stats().reread == 4
    assert fx.segments() == sorted((s, t.num_rows) for s, t in fx.handed)
    assert alerts(fx.db) == fx.expected()
    # a segment handed over again after it was taken in (a flusher's redo) changes nothing
    restarted.enqueue(*fx.handed[0])
    assert restarted.run_pending() == 1 and fx.queued() == [] and alerts(fx.db) == fx.expected()


def test_memory_stays_within_the_budget_and_the_rest_is_read_back(fx: Fx) -> None:
    w = worker(fx, max_buffered_readings=8)  # two segments of four readings
    fx.flush(w.enqueue)
    assert w.stats().buffered_readings == 8
    assert w.run_pending() == 6
    stats = w.stats()
    assert (stats.reread, stats.buffered_readings, stats.backlog) == (4, 0, 0)
    assert alerts(fx.db) == fx.expected()


def test_a_segment_the_lake_does_not_hold_cannot_be_read_back(fx: Fx) -> None:
    w = worker(fx, retry=Retry(attempts=1, first_s=0))
    with fx.db.write() as conn:
        add_queued(conn, "never-written", readings=3, at="2026-03-02T00:00:00.000Z")
    assert w.run_pending() == 1
    (poisoned,) = stream_backlog(fx.world.node).poisoned
    assert poisoned.segment == "never-written" and poisoned.attempts == 1
    assert poisoned.error is not None
    assert poisoned.error.startswith(SegmentUnavailable.__name__)
    assert "'never-written' is not committed in the lake" in poisoned.error


# -- (3) retries and poison --------------------------------------------------------------------


class Flaky(StreamMonitor):
    """Fails each segment named in ``fails`` that many times."""

    def __init__(self, db: Database, fails: dict[str, int]) -> None:
        super().__init__(db, priority=False)
        self.fails = fails
        self.calls: list[str] = []

    def observe(self, segment: str, table: pa.Table) -> Observed:
        self.calls.append(segment)
        if self.fails.get(segment, 0) > 0:
            self.fails[segment] -= 1
            raise RuntimeError(f"cannot take {segment} in")
        return super().observe(segment, table)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


def test_a_failed_segment_is_retried_after_its_backoff_and_later_ones_wait(
    fx: Fx, tmp_path: Path
) -> None:
    clock = Clock()
    flaky = Flaky(fx.db, {"s1": 2})
    w = worker(fx, flaky, retry=Retry(attempts=5, first_s=30, max_s=45), clock=clock)
    w.enqueue("s1", segment(meter("R-1", [10, 11, 12, 5])))  # a reverse flow
    # 5 -> 4 (against s1's state): a reverse flow; 70 -> 1: a counter reset
    w.enqueue("s2", segment(meter("R-1", [4, 70, 1], start=T0 + timedelta(hours=1))))
    assert w.step() == 0.0  # s1 failed once
    assert w.step() == pytest.approx(30.0)  # its backoff; s2 is not taken first
    assert flaky.calls == ["s1"] and fx.queued() == ["s1", "s2"]
    clock.now += timedelta(seconds=31)
    assert w.step() == 0.0 and w.step() == pytest.approx(45.0)  # failed again: backoff doubled
    clock.now += timedelta(seconds=46)
    assert w.run_pending() == 2 and flaky.calls == ["s1", "s1", "s1", "s2"]
    assert fx.queued() == [] and w.stats().failures == 2
    rows = {(a[0], a[1]): a for a in alerts(fx.db)}
    assert rows[("R-1", "reverse_flow")][5] == 2  # s2 continued from s1's state
    assert rows[("R-1", "counter_reset")][5] == 1 and len(rows) == 2


def test_a_segment_that_keeps_failing_is_poisoned_and_passed_over(fx: Fx) -> None:
    flaky = Flaky(fx.db, {"bad": 99})
    w = worker(fx, flaky, retry=Retry(attempts=3, first_s=0))
    w.enqueue("ok-1", segment(meter("P-1", [1, 2, 3])))
    w.enqueue("bad", segment(meter("P-1", [4, 5], start=T0 + timedelta(hours=1))))
    w.enqueue("ok-2", segment(meter("P-1", [1, 2], start=T0 + timedelta(hours=2))))
    assert w.run_pending() == 5  # ok-1, three tries of bad, ok-2
    assert flaky.calls == ["ok-1", "bad", "bad", "bad", "ok-2"]
    backlog = stream_backlog(fx.world.node)
    assert (backlog.queued, backlog.queued_readings) == (0, 0)
    (poisoned,) = backlog.poisoned
    assert (poisoned.segment, poisoned.attempts, poisoned.readings) == ("bad", 3, 2)
    assert poisoned.error == "RuntimeError: cannot take bad in" and poisoned.poisoned_at
    stats = w.stats()
    assert (stats.failures, stats.poisoned, stats.segments_observed) == (3, 1, 2)
    assert stats.buffered_readings == 0  # the poisoned one's copy is let go
    assert w.run_pending() == 0  # not tried again
    # ok-2 against ok-1's state: 3 -> 1 and 90 minutes between them
    got = {(a[1], a[5], a[6]["quantity"]) for a in alerts(fx.db) if a[0] == "P-1"}
    assert got == {("reverse_flow", 1, QTY), ("gap", 1, QTY)}


# -- (4) /metrics --------------------------------------------------------------------------------


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_metrics_show_the_monitors_work_backlog_and_poison(fx: Fx) -> None:
    node = fx.world.node
    fx.lake.close()  # the node's lake writer takes the lake: its own, under data_dir
    with node.db.write() as conn:
        add_queued(conn, "old", readings=7, at="2026-03-02T00:00:00.000Z")
        record_failure(conn, "old", attempts=5, error="RuntimeError: x", next_try_at=None,
                       poisoned_at="2026-03-02T00:00:05.000Z")  # fmt: skip
    with TestClient(create_app(node, background=True)) as http:

        def observed() -> bool:
            text = http.get("/metrics").text
            return _metric(text, "metrocloud_stream_readings_observed_total") == 24

        _until(observed, "the node's monitor to take in the 24 readings")
        text = http.get("/metrics").text
    assert _metric(text, "metrocloud_stream_segments_observed_total") >= 1
    assert _metric(text, "metrocloud_stream_backlog_segments") == 0
    assert _metric(text, "metrocloud_stream_backlog_readings") == 0
    assert _metric(text, "metrocloud_stream_poisoned_segments") == 1
    assert _metric(text, "metrocloud_stream_failures_total") == 0
    assert _metric(text, "metrocloud_lake_hook_failures_total") == 0
    assert _metric(text, "metrocloud_stream_lag_seconds") >= 0
    assert _metric(text, "metrocloud_stream_buffered_readings") == 0
    assert {(a[1], a[5]) for a in alerts(node.db)} == {("counter_reset", 1), ("seal_broken", 1),
                                                      ("reverse_flow", 1)}  # fmt: skip
