"""``metrocloud monitor run``, ``maintenance plan`` and ``maintenance reliability`` on DuckDB:
what they print is what the services answer; bad input is one line on stderr, exit 2.
(The same commands on Spark: tests/services/test_monitoring_spark.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app, out
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services.fleet import alert_json, estimate_json
from metrocloud.services.maintenance import plan_maintenance, type_reliability
from metrocloud.services.monitoring import Alert, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import SimConfig, run_simulation

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
        categories=("electricity", "water"),
    )
    run_simulation(node, config)
    engine = DuckDBEngine(Lake.open(node.settings.lake_path()), threads=1)
    yield Fleet(root, node, engine, detect(node, engine))
    engine.close()
    node.db.dispose()


def run(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    # wide enough that the tables do not fold ids and dates (the console measured its
    # terminal when it was created, so COLUMNS alone would not do)
    width = out._width
    out._width = 240
    try:
        result = runner.invoke(app, [*args, "--data-dir", str(fleet.root)], env={"COLUMNS": "240"})
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
