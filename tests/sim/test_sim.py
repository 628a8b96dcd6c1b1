"""The simulator end to end: through the real intake into the lake, checked against the labels.

Three small runs (module fixtures): a mixed fleet in this process, the same fleet again with
two worker processes (determinism), and an electricity fleet with a reference meter on every
instrument and every fault and tamper kind injected once (electricity consumes in every
quarter hour, so each kind is visible in every window).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from math import floor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services.monitoring import balance_areas
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import KINDS, LABELS_SCHEMA, SimConfig, SimResult, run_simulation
from metrocloud.sim.labels import write_labels
from metrocloud.sim.plan import AREA_PROFILES
from metrocloud.store.schema import events, intake_flags, quarantine

TODAY = datetime.now(UTC).date()
START = TODAY - timedelta(days=12)
START_MS = int(datetime(START.year, START.month, START.day, tzinfo=UTC).timestamp() * 1000)
QUARTER = 900_000


@dataclass
class Run:
    node: Node
    result: SimResult
    labels: list[dict[str, Any]]
    #: (instrument, quantity) -> [(t ms, value, status)] in time order
    series: dict[tuple[str, str], list[tuple[int, float, int]]]

    def label(self, kind: str) -> dict[str, Any]:
        [row] = [r for r in self.labels if any(f["kind"] == kind for f in r["faults"])]
        return row

    def main(self, row: dict[str, Any]) -> list[tuple[int, float, int]]:
        return self.series.get((row["instrument"], row["quantity"]), [])

    def ref(self, row: dict[str, Any]) -> list[tuple[int, float, int]]:
        return self.series.get((row["instrument"], row["reference_quantity"]), [])


def _run(root: Path, **kw: Any) -> Run:
    node = Node.open(Settings(data_dir=root, country="DE"))
    result = run_simulation(node, SimConfig(start=START, **kw))
    with DuckDBEngine(Lake.open(node.settings.lake_path()), threads=1) as engine:
        rows = engine.sql(
            "SELECT instrument, quantity, epoch_ms(t) AS t, value, status FROM readings "
            "ORDER BY instrument, quantity, t"
        ).to_pylist()
    series: dict[tuple[str, str], list[tuple[int, float, int]]] = {}
    for r in rows:
        series.setdefault((r["instrument"], r["quantity"]), []).append(
            (r["t"], r["value"], r["status"])
        )
    labels = pq.read_table(result.labels).to_pylist()
    for row in labels:
        for f in row["faults"]:
            f["params"] = json.loads(f["params"])
            f["start_ms"] = int(f["start"].timestamp() * 1000)
            f["end_ms"] = None if f["end"] is None else int(f["end"].timestamp() * 1000)
    return Run(node, result, labels, series)


MIXED = {"instruments": 20, "days": 3, "seed": 11, "reference_share": 0.5}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run = _run(tmp_path_factory.mktemp("mixed"), workers=0, **MIXED)
    yield run
    run.node.db.dispose()


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run = _run(tmp_path_factory.mktemp("pooled"), workers=2, chunk=6, **MIXED)
    yield run
    run.node.db.dispose()


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run = _run(
        tmp_path_factory.mktemp("faults"),
        instruments=16,
        days=6,
        seed=4,
        workers=0,
        reference_share=1.0,
        crossing_share=0.3,
        rates={k: 0.001 for k in KINDS},
        categories=["electricity"],
    )
    yield run
    run.node.db.dispose()


# -- a mixed fleet through the real intake -------------------------------------------------------


def test_a_small_mixed_fleet_runs_end_to_end_into_the_lake(mixed: Run) -> None:
    r = mixed.result
    assert r.instruments == 20 and r.days == 3
    assert set(r.categories) == {"MI-001", "MI-002", "MI-003", "MI-005", "DE-EV"}
    assert all(r.faults[k] >= 1 for k in KINDS)
    lake_rows = sum(len(s) for s in mixed.series.values())
    assert lake_rows == r.lake_rows == r.readings_accepted > 0
    # everything sent was accepted except the batches with unapproved software
    assert set(r.quarantined) == {"unapproved-software"}
    assert r.batches_accepted + r.quarantined["unapproved-software"] == r.batches_sent
    assert sum(row["readings_sent"] for row in mixed.labels) == r.readings_sent
    for row in mixed.labels:
        in_lake = len(mixed.main(row)) + len(mixed.ref(row) if row["reference_quantity"] else [])
        if row["batches_quarantined"] == 0:
            assert in_lake == row["readings_sent"]
        else:
            assert in_lake < row["readings_sent"]
    summary = json.loads(r.summary.read_text())
    assert summary["readings_accepted"] == r.readings_accepted
    assert summary["labels"] == str(r.labels)
    assert summary["quarantined"] == r.quarantined


def test_registers_are_cumulative_in_their_units(mixed: Run) -> None:
    units = {"MI-003": "kWh", "MI-002": "m³", "MI-001": "m³", "MI-005": "L", "DE-EV": "kWh"}
    for row in mixed.labels:
        assert row["unit"] == units[row["category"]]
        if row["faults"]:
            continue
        values = [v for _, v, _ in mixed.main(row)]
        assert values == sorted(values)
        if row["interval_s"]:
            steps = {b[0] - a[0] for a, b in pairwise(mixed.main(row))}
            assert steps == {row["interval_s"] * 1000}
            assert len(values) == 3 * 86_400 // row["interval_s"]


def test_labels_have_the_documented_schema(mixed: Run, tmp_path: Path) -> None:
    table = pq.read_table(mixed.result.labels)
    assert table.schema.equals(LABELS_SCHEMA, check_metadata=True)
    # the fleet, then the meters of its balance areas
    areas = mixed.result.extra["balance_areas"]
    assert areas >= 1 and table.num_rows == 20 + areas
    assert table["area_meter"].to_pylist() == [False] * 20 + [True] * areas
    assert len(set(table["instrument"].to_pylist())) == 20 + areas
    as_jsonl = write_labels(table, tmp_path / "labels.jsonl")
    rows = [json.loads(line) for line in as_jsonl.read_text().splitlines()]
    assert [r["serial"] for r in rows] == table["serial"].to_pylist()
    first = next(r for r in rows if r["faults"])
    assert first["faults"][0]["start"].endswith("Z")
    assert isinstance(first["faults"][0]["params"], str)


def test_the_same_seed_gives_the_same_readings_and_labels(mixed: Run, pooled: Run) -> None:
    """Instrument ids are the node's (random); everything keyed by serial is identical."""

    def by_serial(run: Run) -> dict[tuple[str, str], list[tuple[int, float, int]]]:
        serial = {row["instrument"]: row["serial"] for row in run.labels}
        return {(serial[i], q): s for (i, q), s in run.series.items()}

    assert by_serial(mixed) == by_serial(pooled)
    strip = [{k: v for k, v in row.items() if k != "instrument"} for row in mixed.labels]
    assert strip == [{k: v for k, v in row.items() if k != "instrument"} for row in pooled.labels]
    assert mixed.result.quarantined == pooled.result.quarantined


# -- every fault and tamper kind, as the labels say ------------------------------------------------


def _window(series: list[tuple[int, float, int]], start: int, end: int | None) -> tuple[int, int]:
    """Indexes of the first reading at/after ``start`` and at/after ``end`` (clamped)."""
    i0 = next(i for i, (t, _, _) in enumerate(series) if t >= start)
    i1 = len(series) - 1
    if end is not None:
        i1 = min(i1, next((i for i, (t, _, _) in enumerate(series) if t >= end), i1))
    return i0, i1


def _only(run: Run, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    row = run.label(kind)
    assert [f["kind"] for f in row["faults"]] == [kind]
    return row, row["faults"][0]


def test_stuck_register(faults: Run) -> None:
    row, f = _only(faults, "stuck_register")
    main = faults.main(row)
    i0, i1 = _window(main, f["start_ms"], f["end_ms"])
    assert i1 - i0 >= 2
    assert len({v for _, v, _ in main[i0 : i1 + 1]}) == 1  # frozen...
    values = [v for _, v, _ in main]
    assert values[i0] > values[0]  # ...after it had counted
    ref = [v for t, v, _ in faults.ref(row) if main[i0][0] <= t <= main[i1][0]]
    assert ref == sorted(ref)  # consumption went on (where a reference reading falls inside)


def test_counter_reset(faults: Run) -> None:
    row, f = _only(faults, "counter_reset")
    main = faults.main(row)
    i0, _ = _window(main, f["start_ms"], None)
    assert main[i0 - 1][1] > 1000 and main[i0][1] == 0
    values = [v for _, v, _ in main]
    assert values[:i0] == sorted(values[:i0]) and values[i0:] == sorted(values[i0:])


def test_reverse_flow(faults: Run) -> None:
    row, f = _only(faults, "reverse_flow")
    main = faults.main(row)
    i0, i1 = _window(main, f["start_ms"], f["end_ms"])
    inside = [v for _, v, _ in main[i0 : i1 + 1]]
    assert inside == sorted(inside, reverse=True) and inside[-1] < inside[0]
    before = [v for _, v, _ in main[: i0 + 1]]
    assert before == sorted(before)


def test_clock_drift(faults: Run) -> None:
    row, f = _only(faults, "clock_drift")
    rate = f["params"]["seconds_per_day"] / 86_400
    shifted = 0
    for t, _, _ in faults.main(row):
        true = START_MS + round((t - START_MS) / QUARTER) * QUARTER
        expected = floor(rate * (true - f["start_ms"])) if true >= f["start_ms"] else 0
        assert t - true == expected
        shifted += expected != 0
    assert shifted > 10


def test_seal_broken_sets_the_status_bit_and_records_life_cycle_events(faults: Run) -> None:
    row, f = _only(faults, "seal_broken")
    main = faults.main(row)
    i0, _ = _window(main, f["start_ms"], None)
    bits = 8 | (4 if f["params"]["tamper_detected"] else 0)
    assert [s for _, _, s in main] == [bits if i == i0 else 0 for i in range(len(main))]
    with faults.node.db.read() as conn:
        recorded = conn.execute(
            select(events.c.kind, events.c.occurred_at).where(
                events.c.instrument_id == row["instrument"]
            )
        ).all()
    at = f["start"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert ("seal_broken", at) in recorded
    assert any(k == "tamper_detected" for k, _ in recorded) == f["params"]["tamper_detected"]
    for other in faults.labels:  # nobody else's seal
        if other is not row:
            assert all(s == 0 for _, _, s in faults.main(other))


def test_unapproved_software_is_quarantined_by_the_intake(faults: Run) -> None:
    row, f = _only(faults, "unapproved_software")
    start, end = f["start_ms"], f["end_ms"] or START_MS + 6 * 86_400_000
    main = faults.main(row)
    assert not [t for t, _, _ in main if start <= t < end]
    days = (end - start) // 86_400_000
    with faults.node.db.read() as conn:
        held = (
            conn.execute(
                select(quarantine.c.reason).where(quarantine.c.instrument_id == row["instrument"])
            )
            .scalars()
            .all()
        )
        flags = (
            conn.execute(
                select(intake_flags.c.kind).where(intake_flags.c.instrument_id == row["instrument"])
            )
            .scalars()
            .all()
        )
    assert held == ["unapproved-software"] * (2 * days)  # register and reference batches
    assert row["batches_quarantined"] == 2 * days
    assert "unapproved-software" in flags
    if f["end_ms"] is not None:  # approved software again: the chain resumes after a gap
        assert [t for t, _, _ in main if t >= end]
        assert "counter-gap" in flags


def _daily(run: Run, row: dict[str, Any]) -> list[tuple[int, int, float]]:
    """(from, to, registered/true) per day, from the reference readings: each is stamped 1 ms
    after the register's last reading of the day and holds the true register then."""
    at = {t: v for t, v, _ in run.main(row)}
    refs = [(t, v) for t, v, _ in run.ref(row)]
    out = []
    for (t0, r0), (t1, r1) in pairwise(refs):
        out.append((t0, t1, (at[t1 - 1] - at[t0 - 1]) / (r1 - r0)))
    return out


def _error(row: dict[str, Any], t: float) -> float:
    years = (t - START_MS) / (365 * 86_400_000)
    return float(row["initial_error_percent"] + row["drift_percent_per_year"] * years)


def test_under_registration_is_a_step_in_registered_over_true(faults: Run) -> None:
    row, f = _only(faults, "under_registration")
    ratio = f["params"]["ratio"]
    assert 0.75 <= ratio <= 0.92
    seen = set()
    for t0, t1, measured in _daily(faults, row):
        drift = 1 + _error(row, (t0 + t1) / 2) / 100
        if t1 <= f["start_ms"]:
            assert measured == pytest.approx(drift, abs=0.01)
            seen.add("before")
        elif t0 >= f["start_ms"]:
            assert measured == pytest.approx(drift * ratio, abs=0.01)
            seen.add("after")
    assert seen == {"before", "after"}


def test_drift_crosses_the_mpe_on_the_labelled_date(faults: Run) -> None:
    crossing = [r for r in faults.labels if r["mpe_crossing_at"] is not None and not r["faults"]]
    assert crossing
    for row in crossing:
        limit = row["mpe_percent"]
        at = int(row["mpe_crossing_at"].timestamp() * 1000)
        assert row["mpe_crossing_date"] == row["mpe_crossing_at"].date()
        points = []
        for t0, t1, measured in _daily(faults, row):
            error = (measured - 1) * 100
            if t1 <= at:
                assert abs(error) < limit
            elif t0 >= at:
                assert abs(error) > limit
            points.append(((t0 + t1) / 2, error))
        # the drift a monitoring service would estimate from the lake alone
        n = len(points)
        mt = sum(t for t, _ in points) / n
        me = sum(e for _, e in points) / n
        slope = sum((t - mt) * (e - me) for t, e in points) / sum((t - mt) ** 2 for t, _ in points)
        estimate = mt + (limit * (1 if slope > 0 else -1) - me) / slope
        assert abs(estimate - at) < 4 * 3_600_000


# -- the command ------------------------------------------------------------------------------


def test_the_cli_runs_a_fleet_and_refuses_to_overwrite_its_labels(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["sim", "--data-dir", str(tmp_path), "--instruments", "5", "--days", "1"]
    common += ["--workers", "0", "--start", (TODAY - timedelta(days=3)).isoformat()]
    args = [*common, "--seed", "3"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.stderr
    assert "readings sent" in done.stdout and "labels" in done.stdout
    labels = tmp_path / "sim" / "labels.parquet"
    assert pq.read_table(labels).num_rows == 5
    assert json.loads((tmp_path / "sim" / "labels.summary.json").read_text())["instruments"] == 5
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert again.stderr.count("\n") == 1 and "exists already" in again.stderr
    elsewhere = runner.invoke(app, [*args, "--labels", str(tmp_path / "other.jsonl")])
    assert elsewhere.exit_code == 2
    assert "holds simulated instruments of seed 3" in elsewhere.stderr
    reused = runner.invoke(app, [*common, "--seed", "4", "--labels", str(tmp_path / "4.jsonl")])
    assert reused.exit_code == 0, reused.stderr  # same node, same parties and certificates
    assert len((tmp_path / "4.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", (TODAY + timedelta(days=1)).isoformat()], "must lie in the past"),
        (["--start", (TODAY - timedelta(days=500)).isoformat()], "too old"),
        (["--start", "yesterday"], "--start must be a date"),
        (["--labels", "out.csv"], "must end in .parquet or .jsonl"),
    ],
)
def test_the_cli_says_what_is_wrong_in_one_line(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app, ["sim", "--data-dir", str(tmp_path), "--instruments", "2", "--days", "1", *extra]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


# -- balance areas ---------------------------------------------------------------------------------


def test_area_meters_count_their_members_true_consumption_plus_the_losses(mixed: Run) -> None:
    rows = {r["instrument"]: r for r in mixed.labels}
    meters = [r for r in mixed.labels if r["area_meter"]]
    assert meters
    for m in meters:
        members = [r for r in mixed.labels if r["balance_area"] == m["balance_area"]]
        members = [r for r in members if not r["area_meter"]]
        assert len(members) >= 2 and not m["faults"]
        bounds = AREA_PROFILES[m["profile"]]
        through = sum(r["true_consumption"] for r in members)
        # what the members took plus the area's losses: 0.5 to 1.5 times the category's
        # typical share, the daily noise averaged over three days
        lo = 1 + 0.5 * bounds.loss - 2 * bounds.loss_noise
        hi = 1 + 1.5 * bounds.loss + 2 * bounds.loss_noise
        assert lo * through <= m["true_consumption"] <= hi * through, m["balance_area"]
        # the meter registers that with its own (small) error; it reads on its category's
        # grid like its members, or once a day (transaction registers)
        assert m["registered_consumption"] == pytest.approx(m["true_consumption"], rel=0.05)
        readings = mixed.main(m)
        assert len(readings) == m["readings_sent"]
        if m["interval_s"]:
            assert len(readings) == 3 * 86_400 // m["interval_s"]
        else:  # once a day, on days when a member took something
            assert 1 <= len(readings) <= 3
        assert [t for t, _, _ in readings] == sorted(t for t, _, _ in readings)
        assert rows[m["instrument"]]["region"] == members[0]["region"]


def test_the_registry_records_the_balance_areas(mixed: Run) -> None:
    expected: dict[str, tuple[str, list[str]]] = {}
    for r in mixed.labels:
        if r["balance_area"] is None:
            continue
        _meter, members = expected.setdefault(r["balance_area"], ("", []))
        if r["area_meter"]:
            expected[r["balance_area"]] = (r["instrument"], members)
        else:
            members.append(r["instrument"])
    got = balance_areas(mixed.node)
    assert {a: (v.meter, sorted(v.members)) for a, v in got.items()} == {
        a: (m, sorted(ms)) for a, (m, ms) in expected.items()
    }
