"""The streaming monitor's operations (services/_streaming_ops.py, _streaming_replay.py).

- the queue, for the node's operator: pending and poisoned rows in commit order, paged;
- a poisoned segment put back is the next one taken; a segment taken in already changes
  nothing when it comes round again (the monitor is idempotent per segment id); retrying a
  segment that is not poisoned, or unknown, is refused with what was found;
- a replay of the lake rebuilds the state and alerts the live monitor built, equals batch
  ``detect`` for the stream kinds (over the whole lake and over a window), gives the same
  rows twice, takes over the queue, repairs what a poisoned segment left, and is refused
  while another process (a running node) writes the lake.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from metrocloud.api.app import create_app
from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services._streaming_queue import add_queued, record_failure
from metrocloud.services.measurements import lake_service
from metrocloud.services.monitoring import Alert, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.services.streaming import (
    STREAM_KINDS,
    Retry,
    SegmentNotPoisoned,
    SegmentNotQueued,
    StreamAlert,
    StreamMonitor,
    StreamWorker,
    list_stream_alerts,
    list_stream_queue,
    replay_stream,
    retry_stream_segment,
    stream_backlog,
)
from metrocloud.store.database import Database
from metrocloud.store.schema import stream_alerts, stream_queue, stream_segments, stream_state
from tests.conftest import World
from tests.lake._support import table as lake_table
from tests.services.test_streaming import START, meter, segment, simulate_fleet
from tests.services.test_streaming_worker import Flaky, Fx, alerts

COUNTERS = ("counter_reset", "reverse_flow", "gap")
#: the simulated fleet's partitions: a category per day, eight days at least
DAYS_AT_LEAST = 8
SEALS = ("seal_broken", "tamper_detected")
AT = "2026-03-02T00:00:00.000Z"
T_LATE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _poison(
    db: Database, segment: str, *, readings: int = 4, error: str = "RuntimeError: x"
) -> None:
    with db.write() as conn:
        add_queued(conn, segment, readings=readings, at=AT)
        record_failure(conn, segment, attempts=8, error=error, next_try_at=None,
                       poisoned_at="2026-03-02T00:02:00.000Z")  # fmt: skip


# -- (1) the queue ------------------------------------------------------------------------------


def test_the_queue_lists_pending_and_poisoned_rows_in_commit_order(world: World) -> None:
    node = world.node
    with node.db.write() as conn:
        for s in ("a", "b", "c"):
            add_queued(conn, s, readings=3, at=AT)
        record_failure(conn, "a", attempts=2, error="OperationalError: locked",
                       next_try_at="2026-03-02T00:00:03.000Z", poisoned_at=None)  # fmt: skip
    _poison(node.db, "b", error="SegmentUnavailable: gone")
    page = list_stream_queue(node)
    assert [(q.segment, q.state, q.attempts) for q in page.items] == [
        ("a", "pending", 2), ("b", "poisoned", 8), ("c", "pending", 0)
    ]  # fmt: skip
    assert page.items[0].error == "OperationalError: locked" and page.next_cursor is None
    assert [q.segment for q in list_stream_queue(node, state="poisoned").items] == ["b"]
    assert [q.segment for q in list_stream_queue(node, state="pending").items] == ["a", "c"]
    # keyset pages by position
    seen, cursor = [], None
    while True:
        p = list_stream_queue(node, limit=2, cursor=cursor)
        seen.append([q.segment for q in p.items])
        if (cursor := p.next_cursor) is None:
            break
    assert seen == [["a", "b"], ["c"]]
    with pytest.raises(InvalidInput, match="'stuck' is none of pending, poisoned"):
        list_stream_queue(node, state="stuck")
    with pytest.raises(InvalidInput, match="cursor"):
        list_stream_queue(node, cursor="bm90LW1pbmU")
    with pytest.raises(Forbidden, match="only node_admin may"):
        list_stream_queue(node, world.auth1.actor)
    assert list_stream_queue(node, world.admin.actor).items == page.items


def test_retrying_what_is_not_poisoned_is_refused_with_what_was_found(world: World) -> None:
    node = world.node
    with node.db.write() as conn:
        add_queued(conn, "waiting", readings=3, at=AT)
    _poison(node.db, "bad")
    StreamMonitor(node.db).observe("done", _table())
    with pytest.raises(SegmentNotQueued, match="'nowhere' is not in the streaming queue"):
        retry_stream_segment(node, None, "nowhere")
    with pytest.raises(SegmentNotPoisoned, match="'waiting' is not poisoned: it is queued"):
        retry_stream_segment(node, None, "waiting")
    with pytest.raises(SegmentNotPoisoned, match="'done' is not poisoned: the monitor took"):
        retry_stream_segment(node, None, "done")
    with pytest.raises(Forbidden):
        retry_stream_segment(node, world.op1.actor, "bad")
    with pytest.raises(InvalidInput, match="1 to 200 characters"):
        retry_stream_segment(node, None, "x" * 201)
    assert stream_backlog(node).poisoned[0].segment == "bad"  # nothing changed by refusals
    row = retry_stream_segment(node, world.admin.actor, "bad", reason="disk replaced")
    assert (row.state, row.attempts, row.next_try_at, row.poisoned_at) == ("pending", 0, None, None)
    assert row.error == "RuntimeError: x"  # the last error stays until the next try
    with pytest.raises(SegmentNotPoisoned, match="not poisoned: it is queued, 0 failed tries"):
        retry_stream_segment(node, None, "bad")


def _table() -> Any:
    return segment(meter("D-1", [1, 2, 3]))


def pa_table(rows: list[Any]) -> Any:
    """Readings rows (test_streaming.py's) as the lake takes them."""
    return lake_table([(r[0], r[1], r[2], r[3], r[4]) for r in rows])


# -- (2) a poisoned segment put back -----------------------------------------------------------


@pytest.fixture
def fx(world: World, tmp_path: Path) -> Iterator[Fx]:
    f = Fx(world, tmp_path)
    yield f
    f.lake.close()


def _segments(db: Database) -> dict[str, tuple[int, int]]:
    with db.read() as conn:
        rows = conn.execute(select(stream_segments.c.segment, stream_segments.c.readings,
                                   stream_segments.c.late))  # fmt: skip
        return {r[0]: (r[1], r[2]) for r in rows}


def test_the_last_segment_put_back_is_taken_in_as_if_it_never_failed(fx: Fx) -> None:
    fx.flush(lambda *_: None)  # six segments in the lake, queued below
    last = fx.handed[-1][0]
    flaky = Flaky(fx.db, {last: 2})
    w = StreamWorker(flaky, fx.lake, retry=Retry(attempts=2, first_s=0))
    for sid, table in fx.handed:
        w.enqueue(sid, table)
    assert w.run_pending() == 7  # five taken in, two tries of the last
    (poisoned,) = stream_backlog(fx.world.node).poisoned
    assert poisoned.segment == last and poisoned.error == f"RuntimeError: cannot take {last} in"
    row = retry_stream_segment(fx.world.node, None, last)
    assert row.position == poisoned.position  # its commit position: the head again
    assert w.run_pending() == 1 and fx.queued() == []
    assert w.stats().reread == 1  # its copy was let go when it was poisoned
    assert alerts(fx.db) == fx.expected()
    assert _segments(fx.db)[last] == (4, 0)


def test_a_segment_put_back_behind_later_ones_is_late_and_replay_repairs_it(fx: Fx) -> None:
    """The counter reset (105 -> 1) is inside the second segment. Poisoned, the third is
    compared with the first (103 -> 3: a reset with other numbers); put back, its readings
    are older than the registers' state: late, counted, not compared. A replay gives what
    the monitor would have raised in commit order."""
    fx.flush(lambda *_: None)
    second = fx.handed[1][0]
    w = StreamWorker(Flaky(fx.db, {second: 2}), fx.lake, retry=Retry(attempts=2, first_s=0))
    for sid, table in fx.handed:
        w.enqueue(sid, table)
    assert w.run_pending() == 7
    wrong = {(a[1], a[6]["previous_value"], a[6]["value"]) for a in alerts(fx.db)
             if a[1] == "counter_reset"}  # fmt: skip
    assert wrong == {("counter_reset", 103.0, 3.0)}
    before = alerts(fx.db)
    retry_stream_segment(fx.world.node, None, second)
    assert w.run_pending() == 1 and fx.queued() == []
    assert _segments(fx.db)[second] == (4, 4)  # all four late
    assert alerts(fx.db) == before  # no status bit in it: nothing raised
    fx.lake.close()  # the node is stopped: the replay takes the lake's writer lock
    done = replay_stream(fx.world.node, lake_path=fx.tmp_path / "lake")
    assert (done.readings, done.late, done.segments_marked) == (24, 0, 0)
    expected = [a[:7] for a in fx.expected()]
    assert [a[:7] for a in alerts(fx.db)] == expected  # all but the segment that raised it
    fx.lake = Lake.open(fx.tmp_path / "lake", writer=True)


def test_a_segment_taken_in_already_changes_nothing_when_it_comes_round_again(fx: Fx) -> None:
    fx.flush(StreamMonitor(fx.db))  # taken in synchronously, as the simulator does
    sid = fx.handed[2][0]
    before, segments = alerts(fx.db), _segments(fx.db)
    _poison(fx.db, sid)  # e.g. queued again by a flusher's redo, then failed
    retry_stream_segment(fx.world.node, None, sid)
    w = StreamWorker(StreamMonitor(fx.db, priority=False), fx.lake)
    assert w.run_pending() == 1 and fx.queued() == []
    assert w.stats().readings_observed == 0  # repeated: only its queue row went
    assert StreamMonitor(fx.db).observe(*fx.handed[2]).repeated
    assert alerts(fx.db) == before and _segments(fx.db) == segments


# -- (3) replay -----------------------------------------------------------------------------------


@dataclass
class Pristine:
    root: Path
    batch: list[Alert]
    stream: list[StreamAlert]
    state: list[tuple[Any, ...]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """test_streaming.py's simulated fleet (its flusher's monitor saw every segment in
    order), closed so that each test can work on a copy of it."""
    f = simulate_fleet(tmp_path_factory.mktemp("stream-ops"))
    state = _state(f.node.db)
    f.node.db.dispose()
    return Pristine(f.root, f.batch, f.stream, state)


def _state(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        rows = conn.execute(select(stream_state).order_by("instrument", "quantity")).all()
    return [tuple(r) for r in rows]


@pytest.fixture
def copy(pristine: Pristine, tmp_path: Path) -> Iterator[Node]:
    root = tmp_path / "node"
    shutil.copytree(pristine.root, root)
    node = Node.open(Settings(data_dir=root, country="DE"), create=False)
    yield node
    node.close()


def _same(got: list[StreamAlert], want: list[StreamAlert]) -> None:
    assert [(a.instrument, a.kind, a.severity, a.at, a.last_at, a.count) for a in got] == [
        (a.instrument, a.kind, a.severity, a.at, a.last_at, a.count) for a in want
    ]
    for a, b in zip(got, want, strict=True):
        assert dict(a.evidence) == pytest.approx(dict(b.evidence))


def _as_batch(stream: list[StreamAlert], batch: list[Alert]) -> None:
    """test_streaming.py's comparison: equal for the counter kinds, the seals at or after
    the life-cycle event, within a day."""
    want = {(a.instrument, a.kind): a for a in batch if a.kind in STREAM_KINDS}
    got = {(a.instrument, a.kind): a for a in stream}
    assert sorted(got) == sorted(want)
    for key, b in want.items():
        s = got[key]
        assert (s.kind, s.severity) == (b.kind, b.severity), key
        if b.kind in COUNTERS:
            assert s.at == b.at and s.count == b.evidence["count"], key
            assert {k: v for k, v in s.evidence.items() if k != "total_decrease"} == {
                k: v for k, v in b.evidence.items() if k != "total_decrease"
            }, key
            if "total_decrease" in b.evidence:
                assert s.evidence["total_decrease"] == pytest.approx(b.evidence["total_decrease"])
        else:
            assert timedelta(0) <= s.at - b.at.replace(microsecond=0) < timedelta(days=1), key


def test_a_node_that_turned_streaming_on_late_gets_what_live_and_batch_found(
    copy: Node, pristine: Pristine
) -> None:
    with copy.db.write() as conn:  # streaming never ran: no state, no alert, no segment
        for t in (stream_state, stream_alerts, stream_segments):
            conn.execute(delete(t))
    ticks: list[tuple[int, int]] = []
    done = replay_stream(copy, progress=lambda d, t: ticks.append((d, t)))
    with Lake.open(copy.settings.lake_path()) as lake:
        stats = lake.stats()
    assert (done.version, done.readings, done.late) == (stats["version"], stats["rows"], 0)
    assert done.segments_marked == stats["segments"] and done.alerts == len(pristine.stream)
    assert ticks[0] == (0, stats["rows"]) and ticks[-1] == (stats["rows"], stats["rows"])
    assert len(ticks) == done.partitions + 1 and done.partitions >= DAYS_AT_LEAST
    got = list_stream_alerts(copy)
    assert {a.kind for a in got} >= {"counter_reset", "reverse_flow", "seal_broken"}
    _same(got, pristine.stream)
    _as_batch(got, pristine.batch)
    assert _state(copy.db) == pristine.state  # each register's newest reading
    assert all(a.segment.startswith(f"replay:v{done.version}/") for a in got)
    # every segment of the lake counts as taken in: handed over again, nothing changes
    with copy.db.read() as conn:
        n = conn.execute(select(func.count()).select_from(stream_segments)).scalar()
    assert n == stats["segments"]


def test_replay_twice_gives_the_same_rows(copy: Node) -> None:
    def clock() -> datetime:
        return datetime(2026, 3, 10, tzinfo=UTC)

    first = replay_stream(copy, clock=clock)
    rows = _rows(copy.db)
    second = replay_stream(copy, clock=clock)
    assert _rows(copy.db) == rows and rows[0]
    assert (second.alerts, second.readings) == (first.alerts, first.readings)
    assert second.segments_marked == 0  # all counted by the first


def _rows(db: Database) -> tuple[list[Any], list[Any]]:
    with db.read() as conn:
        a = conn.execute(select(stream_alerts).order_by("instrument", "kind")).all()
    return [tuple(r) for r in a], _state(db)


def test_a_replayed_window_is_what_detect_finds_in_it(copy: Node, pristine: Pristine) -> None:
    lo = datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(days=1)
    hi = lo + timedelta(days=3, hours=6)
    done = replay_stream(copy, start=lo, end=hi)
    with DuckDBEngine(Lake.open(copy.settings.lake_path()), threads=1) as engine:
        want = [a for a in detect(copy, engine, start=lo, end=hi) if a.kind in COUNTERS]
    got = [a for a in list_stream_alerts(copy) if a.kind in COUNTERS]
    assert want and (done.start, done.end) == (lo, hi)
    _as_batch(got, want)
    whole = [a for a in pristine.batch if a.kind in COUNTERS]
    assert [(a.instrument, a.kind, a.at) for a in want] != [
        (a.instrument, a.kind, a.at) for a in whole
    ]  # the window matters
    lo_ms, hi_ms = lo.timestamp() * 1000, hi.timestamp() * 1000
    assert all(lo_ms <= r[2] < hi_ms for r in _state(copy.db))  # the state stops at --to


def test_replay_takes_over_the_queue(copy: Node) -> None:
    new = "intake-900-901"  # committed, queued, not taken in yet
    with Lake.open(copy.settings.lake_path(), writer=True) as lake:
        lake.write_segment(new, pa_table(meter("Q-1", [1, 2, 3], start=T_LATE)))
        old = sorted(set(lake.manifest.segments) - {new})[0]  # the simulator's (one or more)
    with copy.db.write() as conn:  # taken in, then queued again (a flusher's redo) and failed
        conn.execute(delete(stream_segments).where(stream_segments.c.segment == old))
        add_queued(conn, new, readings=5, at=AT)
    _poison(copy.db, old, readings=6)
    _poison(copy.db, "forgotten-by-retention")
    done = replay_stream(copy)
    assert (done.dropped_pending, done.dropped_poisoned, done.segments_marked) == (1, 1, 2)
    with copy.db.read() as conn:
        left = conn.execute(select(stream_queue.c.segment)).scalars().all()
        s = stream_segments.c
        marked = dict(
            conn.execute(select(s.segment, s.readings).where(s.segment.in_([new, old]))).all()
        )
    assert left == ["forgotten-by-retention"]  # not in the lake: nothing replayed for it
    assert marked == {new: 5, old: 6}  # the queue's counts
    q1 = {(a.kind, a.count) for a in list_stream_alerts(copy, instrument="Q-1")}
    assert q1 == set()  # 1, 2, 3: nothing to raise, but its registers are in the state
    assert ("Q-1", "1-0:1.8.0") in {(r[0], r[1]) for r in _state(copy.db)}


def test_replay_is_refused_while_another_process_writes_the_lake(copy: Node) -> None:
    before = _rows(copy.db)
    with (
        Lake.open(copy.settings.lake_path(), writer=True),
        pytest.raises(Conflict, match="stop the node") as caught,
    ):
        replay_stream(copy)
    assert caught.value.rule is not None and "writer lock" in caught.value.rule
    assert _rows(copy.db) == before
    # a serving node: its lake service holds the lock and runs the live monitor
    with TestClient(create_app(copy, background=True)):
        _until(lambda: (s := lake_service(copy)) is not None and s.monitor is not None)
        with pytest.raises(Conflict, match="cannot replay while another process writes"):
            replay_stream(copy)
    assert _rows(copy.db) == before


def _until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the node's lake writer"
        time.sleep(0.05)


def test_a_bad_window_is_refused_before_the_lake_is_touched(copy: Node) -> None:
    with (
        Lake.open(copy.settings.lake_path(), writer=True),  # no Conflict: checked first
        pytest.raises(InvalidInput, match="before start"),
    ):
        replay_stream(
            copy, start=datetime(2026, 3, 5, tzinfo=UTC), end=datetime(2026, 3, 1, tzinfo=UTC)
        )
