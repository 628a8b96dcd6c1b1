"""Monitoring, maintenance and their evaluation on a small simulated fleet (ground truth).

60 instruments x 20 days, every instrument with a reference meter (so that under-
registration and drift are observable, docs/monitoring.md), every fault and tamper kind at
least once (plus the default rates)."""

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
from metrocloud.lake.engine import MonitoringInputs, monitoring_inputs_by_queries
from metrocloud.services.evaluation import score_alerts, score_crossings
from metrocloud.services.maintenance import plan_maintenance, type_reliability
from metrocloud.services.monitoring import ALERT_KINDS, STEPS, Alert, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import SimConfig, run_simulation

TODAY = datetime.now(UTC).date()
DAYS = 20
START = TODAY - timedelta(days=DAYS + 2)


@dataclass
class Fleet:
    node: Node
    engine: DuckDBEngine
    labels: list[dict[str, Any]]
    alerts: list[Alert]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("monitoring")
    node = Node.open(Settings(data_dir=root, country="DE"))
    result = run_simulation(
        node,
        SimConfig(instruments=60, days=DAYS, seed=21, start=START, workers=0, reference_share=1.0),
    )
    engine = DuckDBEngine(Lake.open(node.settings.lake_path()), threads=2)
    labels = pq.read_table(result.labels).to_pylist()
    yield Fleet(node, engine, labels, detect(node, engine))
    engine.close()
    node.db.dispose()


def test_alerts_are_well_formed(fleet: Fleet) -> None:
    ids = {r["instrument"] for r in fleet.labels}
    assert fleet.alerts
    for a in fleet.alerts:
        assert a.instrument in ids and a.kind in ALERT_KINDS
        assert a.severity in ("info", "warning", "critical")
        assert a.at.tzinfo is not None and a.evidence
        json.dumps(dict(a.evidence), default=str)


def test_faults_and_tampering_are_found_against_the_labels(fleet: Fleet) -> None:
    scores = score_alerts(fleet.alerts, fleet.labels)
    for kind, s in scores.items():
        if kind != "overall":
            assert s.tp >= 1, kind  # every kind is injected at least once
    overall = scores["overall"]
    assert overall.recall >= 0.95, scores
    assert overall.precision >= 0.9, scores
    for kind in ("counter_reset", "reverse_flow", "seal_broken", "unapproved_software"):
        assert scores[kind].recall == 1.0 and scores[kind].precision == 1.0, scores[kind]


def test_alert_times_are_first_evidence(fleet: Fleet) -> None:
    starts = {(r["instrument"], f["kind"]): f["start"] for r in fleet.labels for f in r["faults"]}
    for a in fleet.alerts:
        truth = starts.get((a.instrument, a.kind))
        if truth is not None and a.kind in ("counter_reset", "seal_broken", "stuck_register"):
            # the first reading at or after the fault (clock drift may move it a little)
            assert truth - timedelta(minutes=5) <= a.at <= truth + timedelta(days=1), a


def test_a_window_restricts_the_alerts(fleet: Fleet) -> None:
    first = datetime(START.year, START.month, START.day, tzinfo=UTC)
    early = detect(fleet.node, fleet.engine, start=first, end=first + timedelta(days=1))
    assert len(early) < len(fleet.alerts)
    # the intake's findings carry its time of receipt (today), the others lake time
    lake_time = [a for a in early if a.kind not in ("unapproved_software", "intake_quarantine")]
    assert all(a.at < first + timedelta(days=1) for a in lake_time)


class _ByQueries:
    """The engine, but ``monitoring_inputs`` from the five queries (its definition)."""

    def __init__(self, engine: DuckDBEngine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def monitoring_inputs(self, *args: Any, **kwargs: Any) -> MonitoringInputs:
        return monitoring_inputs_by_queries(self.engine, *args, **kwargs)


def test_detect_reads_the_lake_in_one_pass_and_finds_what_the_queries_find(
    fleet: Fleet,
) -> None:
    timings: dict[str, tuple[float, float]] = {}
    alerts = detect(fleet.node, fleet.engine, timings=timings)
    assert fleet.engine.last_monitoring_plan == "pass"
    assert alerts == fleet.alerts
    assert set(timings) == set(STEPS)
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in timings.values())
    queries: Any = _ByQueries(fleet.engine)
    assert detect(fleet.node, queries) == alerts
    first = datetime(START.year, START.month, START.day, tzinfo=UTC)
    for start, end in (
        (first + timedelta(days=2, hours=5), first + timedelta(days=14, hours=7, seconds=1)),
        (first + timedelta(days=3, hours=1), first + timedelta(days=3, hours=20)),
    ):
        window = detect(fleet.node, fleet.engine, start=start, end=end)
        assert window == detect(fleet.node, queries, start=start, end=end)
        assert window != alerts


def test_predicted_mpe_crossings_match_the_labels(fleet: Fleet) -> None:
    estimates = plan_maintenance(fleet.node, fleet.engine)
    # everyone has a reference meter; a few lack the days (EV points without sessions)
    assert len(estimates) >= 0.9 * len(fleet.labels)
    crossings = score_crossings(
        {e.instrument: e.predicted_crossing for e in estimates}, fleet.labels
    )
    assert crossings.labelled >= 3
    assert crossings.fraction >= 0.95, crossings
    by_id = {e.instrument: e for e in estimates}
    for r in fleet.labels:
        if r["mpe_crossing_at"] is not None and not r["faults"]:
            e = by_id[r["instrument"]]
            assert e.drift_low <= r["drift_percent_per_year"] <= e.drift_high or abs(
                e.drift_percent_per_year - r["drift_percent_per_year"]
            ) < 0.02 * abs(r["drift_percent_per_year"])
            assert e.recommended_reverification is not None
            assert e.recommended_reverification <= r["mpe_crossing_at"].date()


def test_type_reliability_counts_failures_per_certificate(fleet: Fleet) -> None:
    first = datetime(START.year, START.month, START.day, tzinfo=UTC)
    curves = type_reliability(
        fleet.node, fleet.alerts, start=first, end=datetime.now(UTC) + timedelta(hours=1)
    )
    assert len(curves) == 5  # one certificate per category
    failed = {a.instrument for a in fleet.alerts if a.severity == "critical"}
    assert sum(p.failures for c in curves.values() for p in c) == len(failed)
    assert sum(p.failures + p.censored for c in curves.values() for p in c) == len(fleet.labels)
    for curve in curves.values():
        survival = [p.survival for p in curve]
        assert survival == sorted(survival, reverse=True) and 0 <= survival[-1] <= 1
