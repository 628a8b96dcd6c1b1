"""The lake's maintenance in operation (services/_lake_maintenance.py): the node's lake writer
compacts the closed days' partitions and leaves today's alone, retention drops old days only,
retired files wait for their grace, a maintenance failure never stops the flusher, /metrics
counts the files and the compactions, and the simulator compacts what a node would have.

Real lakes, real segment files (``write_segment``, the node's flusher), real threads; waits
have a deadline only as a guard, nothing asserts how long anything took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from metrocloud.api.app import create_app
from metrocloud.ingest import Intake, IntakeLimits
from metrocloud.lake import Lake, validate_readings
from metrocloud.lake.maintenance import category_stats, partition_files
from metrocloud.lake.schema import FILE_SCHEMA
from metrocloud.services import instruments as inst
from metrocloud.services.measurements import (
    LakeMaintenance,
    compact_each,
    compactable,
    first_open_day,
    start_lake,
    stop_lake,
)
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import SimConfig, run_simulation
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey
from tests.conftest import DbTarget, World, software
from tests.ingest.test_intake import NOW, Meter
from tests.lake._support import table

QTY = "1-0:1.8.0"
_ORDER = ("category", "day", "instrument", "quantity", "t")


@pytest.fixture
def settings(tmp_path: Path, db_target: DbTarget) -> Settings:
    """The node of these tests runs its lake maintenance every 50 ms."""
    return Settings(
        data_dir=tmp_path / "node",
        db=db_target.url,
        db_schema=db_target.schema,
        country="DE",
        lake_compact_interval_s=0.05,
    )


def _readings(day: date, *, offset: int = 0, instruments: Iterable[str] = ("A1", "B2")) -> pa.Table:
    """Six readings per instrument on ``day``, ten minutes apart from minute ``10 * offset``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return table(
        (ins, "MI-003", start + timedelta(minutes=10 * (k + offset)), QTY, 100.0 * i + k + offset)
        for i, ins in enumerate(instruments)
        for k in range(6)
    )


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in _ORDER))


def _content(root: Path, *, skip: str | None = None) -> list[dict[str, Any]]:
    """Every row the lake's manifest lists (but on day ``skip``), every column, with its
    partition; sorted."""
    rows: list[dict[str, Any]] = []
    for f in Lake.open(root).snapshot().manifest.files():
        if f.day == skip:
            continue
        part = pq.read_table(root / f.path, schema=FILE_SCHEMA)
        part = part.set_column(0, "instrument", part.column("instrument").cast(pa.string()))
        rows += [{**r, "category": f.category, "day": f.day} for r in part.to_pylist()]
    return _sorted(rows)


def _expected(tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
    """What the lake holds after writing ``tables``: the rows in the same form as _content."""
    rows: list[dict[str, Any]] = []
    for t in tables:
        for r in validate_readings(t).to_pylist():
            rows.append({**{k: r[k] for k in FILE_SCHEMA.names}, "category": r["category"],
                         "day": r["day"].isoformat()})  # fmt: skip
    return _sorted(rows)


def _files(lake_or_root: Lake | Path) -> dict[tuple[str, str], list[str]]:
    lake = lake_or_root if isinstance(lake_or_root, Lake) else Lake.open(lake_or_root)
    return {
        key: sorted(Path(f.path).name for f in files)
        for key, files in partition_files(lake.snapshot().manifest).items()
    }


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


# -- the library: one partition per call ----------------------------------------------------


def test_compact_with_partitions_rewrites_only_those(tmp_path: Path) -> None:
    days = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    written = [_readings(d, offset=10 * k) for d in days for k in range(3)]
    with Lake.open(tmp_path / "lake", create=True) as lake:
        for n, t in enumerate(written):
            lake.write_segment(f"seg-{n}", t)
        r = lake.compact(partitions=[("MI-003", "2026-03-02")])
        assert (r.partitions, r.files_before, r.files_after) == (1, 3, 1)
        files = _files(lake)
        assert [len(files[("MI-003", d.isoformat())]) for d in days] == [3, 1, 3]
        assert files[("MI-003", "2026-03-02")][0].startswith("c-")
        # compact_each: the rest, one partition per call, progress after each
        seen: list[tuple[int, int]] = []
        todo = compactable(lake.manifest)
        assert todo == [("MI-003", "2026-03-01"), ("MI-003", "2026-03-03")]
        r = compact_each(lake, todo, progress=lambda done, total: seen.append((done, total)))
        assert (r.partitions, r.files_before, r.files_after, r.rows) == (2, 6, 2, 72)
        assert seen == [(1, 2), (2, 2)]
        assert compactable(lake.manifest) == []
    assert _content(tmp_path / "lake") == _expected(written)


def test_closed_days_are_those_before_today_once_the_grace_after_midnight_passed(
    tmp_path: Path,
) -> None:
    assert first_open_day(datetime(2026, 3, 5, 1, 59, tzinfo=UTC)) == date(2026, 3, 4)
    assert first_open_day(datetime(2026, 3, 5, 2, 0, tzinfo=UTC)) == date(2026, 3, 5)
    with Lake.open(tmp_path / "lake", create=True) as lake:
        for day in (3, 4, 5):
            for k in range(2):
                lake.write_segment(f"seg-{day}-{k}", _readings(date(2026, 3, day), offset=10 * k))
        manifest = lake.manifest
    night = first_open_day(datetime(2026, 3, 5, 1, 59, tzinfo=UTC))
    morning = first_open_day(datetime(2026, 3, 5, 2, 0, tzinfo=UTC))
    assert compactable(manifest, before=night) == [("MI-003", "2026-03-03")]
    assert compactable(manifest, before=morning) == [
        ("MI-003", "2026-03-03"),
        ("MI-003", "2026-03-04"),
    ]
    assert compactable(manifest, before=morning, min_files=3) == []
    assert len(compactable(manifest)) == 3


def test_category_stats_count_files_per_partition(tmp_path: Path) -> None:
    with Lake.open(tmp_path / "lake", create=True) as lake:
        for k in range(3):
            lake.write_segment(f"a-{k}", _readings(date(2026, 3, 1), offset=10 * k))
        lake.write_segment("b", _readings(date(2026, 3, 2)))
        [s] = category_stats(lake.manifest)
    assert (s.category, s.partitions, s.files, s.rows) == ("MI-003", 2, 4, 48)
    assert (s.files_per_partition_max, s.files_per_partition_median) == (3, 2.0)
    assert (s.first_day, s.last_day) == ("2026-03-01", "2026-03-02")
    assert s.bytes == sum((tmp_path / "lake" / f).stat().st_size for f in _paths(tmp_path))


def _paths(tmp_path: Path) -> list[str]:
    return [f.path for f in Lake.open(tmp_path / "lake").manifest.files()]


# -- one maintenance run, on a clock the test sets ------------------------------------------


def test_retention_drops_old_days_only_and_retired_files_wait_for_the_grace(
    tmp_path: Path,
) -> None:
    root = tmp_path / "lake"
    now = datetime.now(UTC)  # the retired files are stamped with the real time
    clock = [now]
    today = now.date()
    old = [today - timedelta(days=10), today - timedelta(days=9)]
    kept = [today - timedelta(days=2), today]
    tables = {d: [_readings(d, offset=10 * k) for k in range(2)] for d in old + kept}
    with Lake.open(root, create=True) as lake:
        for d, ts in tables.items():
            for k, t in enumerate(ts):
                lake.write_segment(f"seg-{d}-{k}", t)
        paths = {f.path: f.day for f in lake.manifest.files()}
        m = LakeMaintenance(lake, interval_s=0, retention_days=3, clock=lambda: clock[0])
        m.run_once()
        assert (m.runs, m.failures, m.compaction_failures) == (1, 0, 0)
        files = _files(lake)
        # cutoff today - 3: the two old days are gone; the closed day kept is compacted,
        # today's partition is left as it was written
        assert sorted(files) == [("MI-003", kept[0].isoformat()), ("MI-003", today.isoformat())]
        assert [n[:2] for n in files[("MI-003", kept[0].isoformat())]] == ["c-"]
        assert [n[:2] for n in files[("MI-003", today.isoformat())]] == ["s-", "s-"]
        assert m.compactions == 1
        assert lake.manifest.watermarks == {"*": (today - timedelta(days=3)).isoformat()}
        # dropped and replaced files stay on disk for the grace (readers of old snapshots)
        assert all((root / p).exists() for p in paths)
        assert len(lake.manifest.retired) == 2 * 2 + 2
        version = lake.manifest.version
        m.run_once()  # nothing to drop, compact or delete yet: no commit at all
        assert lake.manifest.version == version
        clock[0] = now + timedelta(hours=2)  # past the grace of an hour
        m.run_once()
        assert lake.manifest.retired == ()
        on_disk = {p: d for p, d in paths.items() if (root / p).exists()}
        assert sorted(on_disk.values()) == [today.isoformat()] * 2
        assert (m.runs, m.failures, m.compaction_failures) == (3, 0, 0)
    assert _content(root) == _expected(t for d in kept for t in tables[d])


def test_a_partition_that_fails_to_compact_is_counted_and_the_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "lake"
    days = [date(2026, 3, 1), date(2026, 3, 2)]
    with Lake.open(root, create=True) as lake:
        for d in days:
            for k in range(2):
                lake.write_segment(f"seg-{d}-{k}", _readings(d, offset=10 * k))
        broken = root / lake.manifest.files()[0].path  # a file of 2026-03-01
        broken.write_bytes(b"not parquet")
        m = LakeMaintenance(lake, interval_s=0, clock=lambda: datetime(2026, 3, 10, 12, tzinfo=UTC))
        m.run_once()
        assert (m.compactions, m.compaction_failures, m.failures, m.runs) == (1, 1, 0, 1)
        assert [len(v) for _, v in sorted(_files(lake).items())] == [2, 1]
        m.run_once()  # tried again next run
        assert m.compaction_failures == 2
    failed = [r for r in caplog.records if "compacting partition MI-003/2026-03-01" in r.message]
    assert len(failed) == 2 and all("tried again next run" in r.message for r in failed)


def test_retention_below_the_intake_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="must exceed intake_max_age_days"):
        Settings(lake_retention_days=30)
    assert Settings(lake_retention_days=30, intake_max_age_days=29).lake_retention_days == 30
    assert Settings().lake_retention_days is None
    assert Settings().lake_compact_interval_s == 3600


# -- the node: its lake writer's maintenance thread ------------------------------------------


def test_the_node_compacts_closed_days_and_leaves_today_alone(node: Node) -> None:
    root = node.settings.lake_path()
    today = node.now().date()
    closed = [today - timedelta(days=3), today - timedelta(days=2)]
    written = []
    with Lake.open(root, create=True) as lake:
        for k in range(3):
            for d in [*closed, today]:
                t = _readings(d, offset=10 * k)
                lake.write_segment(f"seg-{d}-{k}", t)
                written.append(t)
    assert _content(root) == _expected(written)
    service = start_lake(node)
    try:
        _until(lambda: service.maintenance is not None, "the lake writer")
        m = service.maintenance
        assert m is not None and service.lake is not None
        _until(lambda: m.runs >= 1, "a maintenance run")
        # a late batch of a closed day, written by the writer while maintenance goes on
        late = _readings(closed[0], offset=100)
        service.lake.write_segment("late", late)
        written.append(late)
        runs = m.runs
        _until(lambda: m.runs >= runs + 2, "a maintenance run after the late write")
        assert (m.failures, m.compaction_failures) == (0, 0)
        assert m.compactions == 3  # both closed days, then the one the late file reopened
    finally:
        stop_lake(node)
    files = _files(root)
    for d in closed:
        [name] = files[("MI-003", d.isoformat())]
        assert name.startswith("c-")
    assert [n[:2] for n in files[("MI-003", today.isoformat())]] == ["s-"] * 3
    assert _content(root) == _expected(written)
    # the files compaction replaced wait for their grace (a reader may still hold them)
    retired = Lake.open(root).manifest.retired
    assert len(retired) == 2 * 3 + 2 and all((root / r.path).exists() for r in retired)


def test_a_failing_maintenance_does_not_stop_the_flusher(world: World) -> None:
    node = world.node
    root = node.settings.lake_path()
    old = node.now().date() - timedelta(days=5)
    with Lake.open(root, create=True) as lake:
        for k in range(2):
            lake.write_segment(f"old-{k}", _readings(old, offset=10 * k))
        (root / lake.manifest.files()[0].path).write_bytes(b"not parquet")
    cert = world.certificate(world.nb1, world.man1)
    key = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
    refs, _ = inst.register_instruments(
        node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial="M-1",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(key.public_key.to_spki_b64(),),
            )
        ],
    )
    meter = Meter(refs[0]["id"], key, software("1.0.0").checksum)
    intake = Intake(node.db, clock=lambda: NOW, limits=IntakeLimits(cache_seconds=0))
    service = start_lake(node)
    try:
        _until(lambda: service.maintenance is not None, "the lake writer")
        m = service.maintenance
        assert m is not None and service.flusher is not None
        _until(lambda: m.compaction_failures >= 1, "the failed compaction")
        outcomes = intake.submit([meter.batch(4).wire() for _ in range(3)], "http")
        assert [o.status for o in outcomes] == ["accepted"] * 3
        flusher = service.flusher
        _until(lambda: flusher.readings_flushed == 12, "the flusher")
        failures = m.compaction_failures
        _until(lambda: m.compaction_failures > failures, "the next run's retry")
        assert m.runs >= 2  # the thread goes on
    finally:
        stop_lake(node)
    rows = _content(root, skip=old.isoformat())  # (its broken file cannot be read)
    assert [r["instrument"] for r in rows] == [meter.instrument] * 12


def _metric(text: str, name: str, label: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{label}}} is not in /metrics")


def test_metrics_show_the_lake_files_and_the_compactions(node: Node) -> None:
    root = node.settings.lake_path()
    today = node.now().date()
    good, bad = today - timedelta(days=3), today - timedelta(days=2)
    with Lake.open(root, create=True) as lake:
        for k in range(3):
            for d in (good, bad, today):
                lake.write_segment(f"seg-{d}-{k}", _readings(d, offset=10 * k))
        broken = next(f for f in lake.manifest.files() if f.day == bad.isoformat())
        (root / broken.path).write_bytes(b"not parquet")
    with TestClient(create_app(node, background=True)) as http:

        def failed_twice() -> bool:
            text = http.get("/metrics").text
            return _metric(text, "metrocloud_lake_compactions_total", 'outcome="failed"') >= 2

        _until(failed_twice, "two failed compactions of the broken partition")
        text = http.get("/metrics").text
    assert _metric(text, "metrocloud_lake_compactions_total", 'outcome="done"') == 1
    assert _metric(text, "metrocloud_lake_files", 'category="MI-003"') == 1 + 3 + 3
    assert _metric(text, "metrocloud_lake_partitions", 'category="MI-003"') == 3
    assert _metric(text, "metrocloud_lake_files_per_partition_max") == 3
    assert _metric(text, "metrocloud_lake_maintenance_failures_total") == 0


# -- the simulator: it leaves the lake as a node in operation would --------------------------


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "no-compact"])
def test_the_simulator_compacts_the_closed_days_it_wrote(tmp_path: Path, compact: bool) -> None:
    node = Node.open(Settings(data_dir=tmp_path, country="DE"))
    start = node.now().date() - timedelta(days=4)
    days = [start + timedelta(days=k) for k in range(3)]
    earlier = [_readings(d, instruments=("X-EARLIER",)) for d in days]  # another run's files
    with Lake.open(node.settings.lake_path(), create=True) as lake:
        for k, t in enumerate(earlier):
            lake.write_segment(f"earlier-{k}", t)
    steps: list[tuple[str, int, int]] = []
    config = SimConfig(instruments=6, days=3, seed=3, start=start, workers=0, compact=compact)
    try:
        result = run_simulation(node, config, progress=lambda *step: steps.append(step))
    finally:
        node.db.dispose()
    root = node.settings.lake_path()
    files = _files(root)
    shared = [("MI-003", d.isoformat()) for d in days]  # the earlier files' partitions
    assert result.lake_rows == result.readings_accepted + sum(t.num_rows for t in earlier)
    assert sum(r["instrument"] == "X-EARLIER" for r in _content(root)) == 3 * 6
    if compact:
        assert [s for s in steps if s[0] == "compact"] == [("compact", 0, 3)] + [
            ("compact", n, 3) for n in (1, 2, 3)
        ]
        assert all(len(files[key]) == 1 and files[key][0].startswith("c-") for key in shared)
    else:
        assert not [s for s in steps if s[0] == "compact"]
        assert all(len(files[key]) >= 2 for key in shared)
    assert all(len(v) == 1 for k, v in files.items() if k not in shared)
