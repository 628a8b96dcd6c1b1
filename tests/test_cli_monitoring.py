"""``metrocloud monitor run``, ``maintenance plan`` and ``maintenance reliability`` on DuckDB,
and the streaming monitor's ``monitor queue``, ``monitor retry`` and ``monitor replay``:
what they print is what the services answer; bad input is one line on stderr, exit 2.
(The same commands on Spark: tests/services/test_monitoring_spark.py.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app, out
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services._streaming_queue import add_queued, record_failure
from metrocloud.services.fleet import alert_json, estimate_json
from metrocloud.services.maintenance import plan_maintenance, type_reliability
from metrocloud.services.monitoring import Alert, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import SimConfig, run_simulation
from metrocloud.store.database import Database, sqlite_url
from tests.lake._support import table

DAYS = 8
START = datetime.now(UTC).date() - timedelta(days=DAYS + 2)
runner = CliRunner()


@dataclass
class Fleet:
    root: Path
    node: Node
    engine: DuckDBEngine
    alerts: list[Alert]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("cli-monitoring")
    node = Node.open(Settings(data_dir=root, country="DE"))
    config = SimConfig(
        instruments=16,
        days=DAYS,
        seed=21,
        start=START,
        workers=0,
        reference_share=1.0,
        balance_share=0.0,  # sixteen instruments, no area meters on top
        categories=("electricity", "water"),
    )
    run_simulation(node, config)
    engine = DuckDBEngine(Lake.open(node.settings.lake_path()), threads=1)
    yield Fleet(root, node, engine, detect(node, engine))
    engine.close()
    node.db.dispose()


def run(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    return run_at(fleet.root, *args)


def run_at(root: Path, *args: str) -> tuple[int, str, str]:
    # wide enough that the tables do not fold ids and dates (the console measured its
    # terminal when it was created, so COLUMNS alone would not do)
    width = out._width
    out._width = 240
    try:
        result = runner.invoke(app, [*args, "--data-dir", str(root)], env={"COLUMNS": "240"})
    finally:
        out._width = width
    return result.exit_code, result.stdout, result.stderr


def test_monitor_run_json_is_detect(fleet: Fleet) -> None:
    code, out, err = run(fleet, "monitor", "run", "--json")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [alert_json(a) for a in fleet.alerts]
    assert fleet.alerts and "duckdb engine" in err and "lake queries" in err


def test_monitor_run_takes_a_window(fleet: Fleet) -> None:
    lo = datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(days=1)
    hi = lo + timedelta(days=3, hours=6)
    code, out, err = run(
        fleet, "monitor", "run", "--json", "--from", lo.date().isoformat(), "--to", hi.isoformat()
    )
    assert code == 0, err
    want = [alert_json(a) for a in detect(fleet.node, fleet.engine, start=lo, end=hi)]
    assert [json.loads(line) for line in out.splitlines()] == want
    assert want != [alert_json(a) for a in fleet.alerts]


def test_monitor_run_table(fleet: Fleet) -> None:
    code, out, err = run(fleet, "monitor", "run")
    assert code == 0, err
    assert f"{len(fleet.alerts)} alert(s) (duckdb)" in out
    for a in fleet.alerts:
        assert a.kind in out


def test_maintenance_plan_json_and_table(fleet: Fleet) -> None:
    plan = plan_maintenance(fleet.node, fleet.engine)
    assert len(plan) >= 12
    code, out, err = run(fleet, "maintenance", "plan", "--json")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [estimate_json(e) for e in plan]
    code, out, err = run(fleet, "maintenance", "plan")
    assert code == 0, err
    assert f"maintenance plan: {len(plan)} instrument(s)" in out
    crossing = next(e for e in plan if e.recommended_reverification is not None)
    assert crossing.recommended_reverification is not None
    assert crossing.recommended_reverification.isoformat() in out


def test_maintenance_reliability_per_type(fleet: Fleet) -> None:
    lo = datetime(START.year, START.month, START.day, tzinfo=UTC)
    hi = lo + timedelta(days=DAYS)
    code, out, err = run(
        fleet,
        "maintenance",
        "reliability",
        "--json",
        "--from",
        lo.isoformat(),
        "--to",
        hi.isoformat(),
    )
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    curves = type_reliability(
        fleet.node, detect(fleet.node, fleet.engine, start=lo, end=hi), start=lo, end=hi
    )
    assert [r["certificate"] for r in got] == list(curves)  # one per type: two categories
    assert len(got) == 2 and sum(r["instruments"] for r in got) == 16
    for record, curve in zip(got, curves.values(), strict=True):
        assert record["failures"] == sum(p.failures for p in curve)
        assert [p["survival"] for p in record["curve"]] == [p.survival for p in curve]
    # without --from: from the lake's first reading; the table form
    code, out, err = run(fleet, "maintenance", "reliability")
    assert code == 0, err
    assert "reliability per type" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("monitor", "run", "--spark-master", "local[1]"), "applies to the spark engine only"),
        (("monitor", "run", "--from", "yesterday"), "--from must be YYYY-MM-DD"),
        (("maintenance", "plan", "--from", "2026-03-05", "--to", "2026-03-01"), "before start"),
        (("monitor", "replay", "--start", "yesterday"), "--from must be YYYY-MM-DD"),
        (("monitor", "replay", "--from", "2026-03-05", "--end", "2026-03-01"), "before start"),
        (("monitor", "queue", "--state", "stuck"), "'stuck' is none of pending, poisoned"),
        (("monitor", "retry", "intake-0-0"), "'intake-0-0' is not in the streaming queue"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    fleet: Fleet, args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(fleet, *args)
    assert code == 2 and out == ""
    assert message in err and err.count("error:") == 1


def test_a_spark_master_in_the_environment_is_for_spark_only(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METROCLOUD_SPARK_MASTER", "spark://nowhere:7077")
    code, out, err = run(fleet, "maintenance", "plan", "--json")
    assert code == 0, err
    assert len(out.splitlines()) == len(plan_maintenance(fleet.node, fleet.engine))


def test_spark_without_java_is_one_line_and_exit_2(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    code, out, err = run(fleet, "monitor", "run", "--engine", "spark")
    assert code == 2 and out == ""
    assert "needs a Java runtime" in " ".join(err.split())


def test_a_directory_without_a_node_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["monitor", "run", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "error:" in result.stderr


# -- the streaming monitor's operations, each on a copy of the fleet's node ---------------------


@pytest.fixture
def copy(fleet: Fleet, tmp_path: Path) -> Path:
    root = tmp_path / "node"
    # the fleet's database is open: its WAL is copied along, the shared-memory index not
    shutil.copytree(fleet.root, root, ignore=shutil.ignore_patterns("*-shm", ".writer.lock"))
    return root


def _db(root: Path) -> Database:
    return Database(sqlite_url(root))


def _lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_monitor_queue_lists_and_retry_puts_a_poisoned_segment_back(copy: Path) -> None:
    db = _db(copy)
    with db.write() as conn:
        for s in ("intake-1-2", "intake-3-4"):
            add_queued(conn, s, readings=4, at="2026-03-02T00:00:00.000Z")
        record_failure(conn, "intake-1-2", attempts=8, error="SegmentUnavailable: [gone]",
                       next_try_at=None, poisoned_at="2026-03-02T00:02:00.000Z")  # fmt: skip
    db.dispose()
    code, out, err = run_at(copy, "monitor", "queue", "--json")
    assert code == 0, err
    got = _lines(out)
    assert [(q["segment"], q["state"], q["attempts"], q["error"]) for q in got] == [
        ("intake-1-2", "poisoned", 8, "SegmentUnavailable: [gone]"),
        ("intake-3-4", "pending", 0, None),
    ]
    code, out, err = run_at(copy, "monitor", "queue")
    assert code == 0, err
    assert "2 queued segment(s): 1 pending, 1 poisoned" in out
    assert "SegmentUnavailable: [gone]" in out  # markup-like text printed as is
    code, out, err = run_at(copy, "monitor", "queue", "--json", "--state", "poisoned")
    assert [q["segment"] for q in _lines(out)] == ["intake-1-2"]
    code, out, err = run_at(copy, "monitor", "retry", "intake-1-2", "--reason", "lake restored")
    assert code == 0, err
    assert "segment intake-1-2 re-queued (4 readings" in out
    code, out, err = run_at(copy, "monitor", "queue", "--json")
    assert [(q["segment"], q["state"], q["attempts"]) for q in _lines(out)] == [
        ("intake-1-2", "pending", 0), ("intake-3-4", "pending", 0)
    ]  # fmt: skip
    for segment in ("intake-1-2", "intake-3-4"):
        code, out, err = run_at(copy, "monitor", "retry", segment)
        assert code == 2 and out == ""
        assert f"'{segment}' is not poisoned: it is queued" in err and err.count("error:") == 1


def _counters(alerts: list[dict[str, object]]) -> list[tuple[object, ...]]:
    keep = ("counter_reset", "reverse_flow", "gap")
    return [(a["instrument"], a["kind"], a["severity"], a["at"], a["evidence"]["quantity"])  # type: ignore[index]
            for a in alerts if a["kind"] in keep]  # fmt: skip


def test_monitor_replay_finds_what_monitor_run_finds_for_the_stream_kinds(copy: Path) -> None:
    """The node streamed only part of its history: a segment its monitor never saw (a counter
    reset) is in the lake. The replay finds it, as batch mode does."""
    t0 = datetime(START.year, START.month, START.day, 6, tzinfo=UTC)
    rows = [("ins-cli-reset", "MI-003", t0 + timedelta(minutes=15 * k), "1-0:1.8.0", v)
            for k, v in enumerate((50.0, 60.0, 1.0, 2.0))]  # fmt: skip
    with Lake.open(copy / "lake", writer=True) as lake:
        lake.write_segment("written-without-streaming", table(rows))
    code, out, err = run_at(copy, "monitor", "alerts", "--json")
    assert ("ins-cli-reset", "counter_reset") not in {
        (a["instrument"], a["kind"]) for a in _lines(out)
    }
    code, out, err = run_at(copy, "monitor", "replay", "--json")
    assert code == 0, err
    summary = json.loads(out)
    with Lake.open(copy / "lake") as lake:
        rows_in_lake = lake.stats()["rows"]
    assert (summary["late"], summary["readings"]) == (0, rows_in_lake)
    assert summary["segments_marked"] == 1  # the one the monitor never saw
    assert "replay readings" in err
    code, out, err = run_at(copy, "monitor", "alerts", "--json")
    stream = _lines(out)
    code, out, err = run_at(copy, "monitor", "run", "--json")
    batch = _lines(out)
    assert ("ins-cli-reset", "counter_reset", "critical") in {
        (a[0], a[1], a[2]) for a in _counters(stream)
    }
    assert _counters(stream) == _counters(batch)
    # again: the same alerts (but for when the node raised them)
    code, out, err = run_at(copy, "monitor", "replay")
    assert code == 0, err
    assert "0 segment(s) newly counted as taken in" in " ".join(out.split())
    code, out, err = run_at(copy, "monitor", "alerts", "--json")
    again = _lines(out)

    def timeless(alerts: list[dict[str, object]]) -> list[dict[str, object]]:
        return [
            {k: v for k, v in a.items() if k not in ("raised_at", "updated_at")} for a in alerts
        ]

    assert timeless(again) == timeless(stream)


def test_monitor_replay_is_refused_while_another_process_writes_the_lake(copy: Path) -> None:
    with Lake.open(copy / "lake", writer=True):
        code, out, err = run_at(copy, "monitor", "replay")
    assert code == 2 and out == ""
    assert "cannot replay while another process writes the lake" in " ".join(err.split())
    assert err.count("error:") == 1


def test_monitor_replay_with_an_end_says_the_state_stops_there(copy: Path) -> None:
    end = (START + timedelta(days=3)).isoformat()
    code, out, err = run_at(copy, "monitor", "replay", "--json", "--end", end)
    assert code == 0, err
    assert json.loads(out)["end"] == f"{end}T00:00:00+00:00"
    assert "replay without --to to resume" in " ".join(err.split())
