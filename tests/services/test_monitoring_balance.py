"""Balance areas end to end: a simulated gas fleet, every instrument in an area behind its
building's main meter and none with a reference meter, through the real intake into the
lake; ``detect`` finds the under-registering members from the areas' balances alone
(services/_balance.py) and accuses nobody else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services.evaluation import score_alerts
from metrocloud.services.monitoring import STEPS, Alert, balance_areas, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import KINDS, SimConfig, run_simulation
from tests._java import require_java

TODAY = datetime.now(UTC).date()
DAYS = 90
START = TODAY - timedelta(days=DAYS + 2)
END = datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(days=DAYS)


@dataclass
class Fleet:
    node: Node
    labels: list[dict[str, Any]]
    alerts: list[Alert]
    timings: dict[str, tuple[float, float]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("balance")
    node = Node.open(Settings(data_dir=root, country="DE"))
    rates = dict.fromkeys(KINDS, 0.0) | {"under_registration": 0.1, "stuck_register": 0.05}
    result = run_simulation(
        node,
        SimConfig(
            instruments=48,
            days=DAYS,
            seed=5,
            start=START,
            workers=0,
            reference_share=0.0,
            balance_share=1.0,
            rates=rates,
            categories=["gas"],
        ),
    )
    labels = pq.read_table(result.labels).to_pylist()
    timings: dict[str, tuple[float, float]] = {}
    with DuckDBEngine(Lake.open(node.settings.lake_path()), threads=2) as engine:
        alerts = detect(node, engine, timings=timings)
    yield Fleet(node, labels, alerts, timings)
    node.db.dispose()


def _under(row: dict[str, Any]) -> dict[str, Any] | None:
    return next((f for f in row["faults"] if f["kind"] == "under_registration"), None)


def test_every_instrument_is_in_an_area_and_the_registry_knows_them(fleet: Fleet) -> None:
    areas = balance_areas(fleet.node)
    members = {m for a in areas.values() for m in a.members}
    fleet_ids = {r["instrument"] for r in fleet.labels if not r["area_meter"]}
    assert members == fleet_ids
    assert {a.meter for a in areas.values()} == {
        r["instrument"] for r in fleet.labels if r["area_meter"]
    }
    assert "balance" in STEPS and "balance" in fleet.timings


def test_under_registering_members_are_found_from_the_balance_alone(fleet: Fleet) -> None:
    found = {
        a.instrument: a
        for a in fleet.alerts
        if a.kind == "under_registration" and a.evidence.get("source") == "balance"
    }
    labelled = [r for r in fleet.labels if _under(r) is not None]
    # enough of them, each with three weeks or more of evidence after its step
    late = END - timedelta(days=21)
    testable = [r for r in labelled if _under(r)["start"] < late]  # type: ignore[index]
    assert len(testable) >= 3
    for row in testable:
        f = _under(row)
        assert f is not None
        alert = found.get(row["instrument"])
        assert alert is not None, row["serial"]
        ev = alert.evidence
        assert ev["balance_area"] == row["balance_area"]
        # (two members of one area step six days apart here: 0.04)
        assert ev["ratio"] == pytest.approx(json.loads(f["params"])["ratio"], abs=0.04)
        assert abs(alert.at - f["start"].replace(hour=0, minute=0, second=0)) <= timedelta(days=2)
        assert alert.severity == "critical" and ev["z"] >= 5
    # nobody else is accused, not the stuck registers, not the area meters
    assert set(found) <= {r["instrument"] for r in labelled}
    meters = {r["instrument"] for r in fleet.labels if r["area_meter"]}
    assert not [a for a in fleet.alerts if a.instrument in meters]


def test_the_scores_count_balance_findings_as_under_registration(fleet: Fleet) -> None:
    scores = score_alerts(fleet.alerts, fleet.labels)
    s = scores["under_registration"]
    assert s.fp == 0 and s.tp >= 3
    assert scores["stuck_register"].tp >= 1


def test_spark_finds_the_same_members_as_duckdb(fleet: Fleet) -> None:
    require_java()
    from metrocloud.lake.spark_engine import SMALL_LAKE_CONF, SparkEngine, local_session

    session = local_session("local[2]", conf=SMALL_LAKE_CONF)
    try:
        spark = SparkEngine(Lake.open(fleet.node.settings.lake_path()), session=session)
        got = detect(fleet.node, spark)
        spark.close()
    finally:
        session.stop()
    assert got == fleet.alerts
    assert any(a.evidence.get("source") == "balance" for a in got)
