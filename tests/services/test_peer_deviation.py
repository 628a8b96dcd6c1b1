"""The ``peer_deviation`` detector (services/_peer_deviation.py): constructed series, a
property (a factor common to the peer group on a day changes nothing), a simulated fleet
scored against the labels, and DuckDB against Spark."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services._peer_deviation import (
    PeerStep,
    PeerThresholds,
    consumption_matrix,
    day_noise,
    day_noise_profile,
    find_peer_steps,
    peer_deviation_steps,
    relative_series,
)
from metrocloud.services.evaluation import LABEL_TO_ALERT, finds, score_alerts
from metrocloud.services.monitoring import ALERT_KINDS, Alert, _registry, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import SimConfig, run_simulation
from tests._java import require_java

DAY0 = date(2026, 3, 2)


def _days(n: int) -> list[date]:
    return [DAY0 + timedelta(days=d) for d in range(n)]


def _group(
    instruments: int = 20, days: int = 30, noise: float = 0.05, seed: int = 1
) -> tuple[list[str], list[date], np.ndarray]:
    """A peer group: levels from 2 to 20 units a day, a weekly rhythm and a slow season
    shared by all, lognormal noise per instrument and day."""
    rng = np.random.default_rng(seed)
    names = [f"I{i:02d}" for i in range(instruments)]
    level = rng.uniform(2, 20, size=(instruments, 1))
    d = np.arange(days)
    common = (1 + 0.3 * np.sin(2 * np.pi * d / 60)) * np.where(d % 7 >= 5, 1.15, 1.0)
    m = level * common[None, :] * np.exp(rng.normal(0, noise, size=(instruments, days)))
    return names, _days(days), m


def _steps(m: np.ndarray, names: list[str], days: list[date], **kw: Any) -> list[PeerStep]:
    return find_peer_steps(names, days, m, **kw)


# -- constructed series ------------------------------------------------------------------------


def test_a_30_percent_step_down_is_found_at_its_day() -> None:
    names, days, m = _group()
    m[3, 10:] *= 0.7
    steps = _steps(m, names, days)
    assert [s.instrument for s in steps] == ["I03"]
    s = steps[0]
    assert abs((s.day - days[10]).days) <= 1
    assert -35 < s.percent < -25 and s.z < -4
    assert s.severity == "critical" and s.peers == 19  # itself not
    assert s.days_before + s.days_after == 30
    assert s.at == datetime(s.day.year, s.day.month, s.day.day, tzinfo=UTC)
    assert s.evidence()["step_day"] == s.day.isoformat()


def test_a_rise_is_found_and_a_small_step_is_a_warning() -> None:
    names, days, m = _group(noise=0.02)
    m[5, 15:] *= 1.25
    m[8, 12:] *= 0.9
    steps = {s.instrument: s for s in _steps(m, names, days)}
    assert set(steps) == {"I05", "I08"}
    assert steps["I05"].percent > 20 and steps["I05"].z > 0
    assert steps["I05"].severity == "critical"
    assert -12 < steps["I08"].percent < -8 and steps["I08"].severity == "warning"


def test_a_drift_is_not_a_step_but_a_step_beside_a_drift_is() -> None:
    names, days, m = _group(instruments=40, days=365, noise=0.2)
    year = np.arange(365) / 365
    m[3] *= np.exp(-0.20 * year)  # a meter losing 20 % a year: a ramp, not a manipulation
    m[4] *= np.exp(0.15 * year)
    m[6] *= np.exp(-0.10 * year)  # drifting, and then manipulated
    m[6, 100:] *= 0.85
    steps = {s.instrument: s for s in _steps(m, names, days)}
    assert set(steps) == {"I06"}, steps
    assert abs((steps["I06"].day - days[100]).days) <= 3 and steps["I06"].percent < -10
    trend = steps["I06"].evidence()["trend_percent_per_year"]
    assert isinstance(trend, float) and math.isfinite(trend)


def _seasonal_group(seed: int) -> tuple[list[str], list[date], np.ndarray]:
    """Gas-like: 6 % daily noise, but four times that for three summer months (hot water
    only), a meter drifting 10 % a year (I03) and a 10 % step in winter (I05)."""
    names, days, m = _group(instruments=60, days=365, noise=0.06, seed=seed)
    rng = np.random.default_rng(100 + seed)
    m[:, 180:270] *= np.exp(rng.normal(0, 0.25, size=(60, 90)))
    m[3] *= np.exp(-0.10 * np.arange(365) / 365)
    m[5, 60:] *= 0.9
    return names, days, m


def test_the_noise_of_each_day_is_the_peers_noise_of_that_season() -> None:
    _, _, m = _seasonal_group(1)
    r, active = relative_series(m)
    profile = day_noise_profile(r[active])
    winter, summer = float(np.median(profile[:150])), float(np.median(profile[190:260]))
    assert 0.045 < winter < 0.075 and 0.2 < summer < 0.32, (winter, summer)
    assert profile.shape == (365,) and np.isfinite(profile).all()


def test_a_noisy_season_neither_hides_a_step_nor_makes_false_ones() -> None:
    # with one noise for the whole year (the median day's), the summer's 25 % days made 8
    # false steps over these ten fleets; weighted by the day's own noise, at most 3
    found = false = 0
    for seed in range(1, 11):
        names, days, m = _seasonal_group(seed)
        steps = {s.instrument for s in _steps(m, names, days)}
        found += "I05" in steps
        false += len(steps - {"I05"})
    assert found == 10 and false <= 3, (found, false)


def test_a_fleet_wide_drop_is_not_a_deviation() -> None:
    names, days, m = _group()
    m[:, 12:17] *= 0.4  # a holiday: everyone uses less
    m[:, 20:] *= 0.8  # and a lasting change for everyone (weather, tariff)
    assert _steps(m, names, days) == []


def test_an_idle_meter_is_not_flagged() -> None:
    names, days, m = _group()
    m[4, :] = 0.0  # never consumes
    m[6, :] = 0.01  # a trickle (0.1 % of the group) that stops nearly entirely
    m[6, 10:] = 0.001
    r, active = relative_series(m)
    assert not active[4] and not active[6] and active.sum() == 18
    assert np.isnan(r[4]).all() and np.isnan(r[6]).all()
    assert _steps(m, names, days) == []


def test_a_single_day_or_a_short_dip_is_not_a_step() -> None:
    names, days, m = _group()
    m[2, 14] *= 0.05  # one day: a partly stuck register
    m[7, 27:] *= 0.3  # the last days only: fewer than min_days
    m[9, 12:15] *= 0.2  # three days, then back
    m[11, 5] = -40.0  # a regression day: no evidence at all
    assert _steps(m, names, days) == []


def test_days_without_enough_peers_carry_no_evidence() -> None:
    names, days, m = _group(instruments=6)
    m[:3, 20:] = np.nan  # half of the group stops sending
    m[4, 20:] *= 0.5
    r, _ = relative_series(m)
    assert np.isnan(r[:, 20:]).all()
    assert _steps(m, names, days) == []


def test_alert_on_restricts_the_report_not_the_peers() -> None:
    names, days, m = _group()
    m[3, 10:] *= 0.7
    m[4, 10:] *= 0.7
    got = _steps(m, names, days, alert_on={"I04"})
    assert [s.instrument for s in got] == ["I04"] and got[0].peers == 18


def test_bad_input_is_refused() -> None:
    names, days, m = _group()
    with pytest.raises(InvalidInput, match="shape"):
        find_peer_steps(names[:-1], days, m)
    with pytest.raises(InvalidInput, match="2-D"):
        relative_series(m[0])
    with pytest.raises(InvalidInput):
        PeerThresholds(min_days=1)
    assert find_peer_steps(names[:3], days, m[:3]) == []  # fewer than min_peers


def test_day_noise_ignores_one_step() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(0, 0.1, 200)
    stepped = y + np.where(np.arange(200) >= 100, -1.0, 0.0)
    assert 0.08 < day_noise(y) < 0.12
    assert day_noise(stepped) == pytest.approx(day_noise(y), rel=0.05)


# -- the property ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    instruments=st.integers(5, 14),
    days=st.integers(8, 40),
    factors=st.lists(st.floats(0.05, 20.0), min_size=40, max_size=40),
    step_at=st.integers(0, 39),
)
def test_a_factor_common_to_the_group_changes_nothing(
    seed: int, instruments: int, days: int, factors: list[float], step_at: int
) -> None:
    names, ds, m = _group(instruments=instruments, days=days, noise=0.08, seed=seed)
    m[0, step_at % days :] *= 0.6
    scaled = m * np.asarray(factors[:days])[None, :]
    want, got = _steps(m, names, ds), _steps(scaled, names, ds)
    assert [(s.instrument, s.day, s.severity, s.peers) for s in got] == [
        (s.instrument, s.day, s.severity, s.peers) for s in want
    ]
    for a, b in zip(got, want, strict=True):
        assert a.percent == pytest.approx(b.percent, rel=1e-9, abs=1e-9)
        assert a.z == pytest.approx(b.z, rel=1e-9, abs=1e-9)


# -- a simulated fleet against its labels ------------------------------------------------------

SIM_DAYS = 40


def _heating_season(days: int) -> date:
    """The latest start of ``days`` days inside November to February that lie in the past:
    gas is then mostly space heating, which follows the weather shared by the fleet, so its
    daily noise against the peers is about 9 % (in summer, hot water only, about 25 % as
    electricity: docs/monitoring.md). At most about 330 days ago, inside the intake's
    400-day age limit."""
    today = datetime.now(UTC).date()
    for year in (today.year, today.year - 1):
        latest = date(year + 1, 3, 1) - timedelta(days=days)
        start = min(latest, today - timedelta(days=days + 2))
        if start >= date(year, 11, 1):
            return start
    return date(today.year - 1, 3, 1) - timedelta(days=days)  # the winter before


START = _heating_season(SIM_DAYS)


@dataclass
class Fleet:
    root: Path
    node: Node
    engine: DuckDBEngine
    labels: list[dict[str, Any]]
    alerts: list[Any]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """150 instruments (gas, electricity, fuel) x 40 winter days, a fifth with a
    reference meter; under-registration on a quarter of them (so that enough fall on
    instruments without a reference), the other lake faults at a few percent (they must not
    look like a step)."""
    root: Path = tmp_path_factory.mktemp("peer-deviation")
    node = Node.open(Settings(data_dir=root, country="DE"))
    rates = {
        "under_registration": 0.25,
        "stuck_register": 0.05,
        "reverse_flow": 0.03,
        "counter_reset": 0.03,
        "clock_drift": 0.03,
        "unapproved_software": 0.02,
        "seal_broken": 0.0,
    }
    result = run_simulation(
        node,
        SimConfig(
            instruments=150,
            days=SIM_DAYS,
            seed=31,
            start=START,
            workers=0,
            reference_share=0.2,
            rates=rates,
            categories=("gas", "electricity", "fuel"),
        ),
    )
    engine = DuckDBEngine(Lake.open(node.settings.lake_path()), threads=2)
    labels = pq.read_table(result.labels).to_pylist()
    yield Fleet(root, node, engine, labels, detect(node, engine))
    engine.close()
    node.db.dispose()


def _under(row: dict[str, Any]) -> dict[str, Any] | None:
    return next((f for f in row["faults"] if f["kind"] == "under_registration"), None)


def _expected_z(fleet: Fleet) -> dict[str, float]:
    """Per under-registered instrument without a reference: the z-score its labelled step
    would have against its own measured day-to-day noise (the noise, not the step, is read
    from the data): how detectable it is at all."""
    out: dict[str, float] = {}
    th = PeerThresholds()
    for cat in sorted({r["category"] for r in fleet.labels}):
        names, days, mats, _ = consumption_matrix(fleet.engine.daily_consumption(category=cat))
        for q, m in mats.items():
            r, _ = relative_series(m, th)
            noises = [day_noise(row[np.isfinite(row)]) for row in r]
            peer = float(np.nanmedian(noises))
            rows = {x["instrument"]: x for x in fleet.labels}
            for i, name in enumerate(names[q]):
                f = _under(rows[name])
                if f is None or rows[name]["reference_quantity"] is not None:
                    continue
                start = f["start"].date()
                valid = [d for d, v in zip(days, r[i], strict=True) if math.isfinite(v)]
                nb = sum(1 for d in valid if d < start)
                na = sum(1 for d in valid if d > start)
                ratio = float(json.loads(f["params"])["ratio"])
                sigma = max(noises[i], peer)
                if min(nb, na) < th.min_days or not math.isfinite(sigma):
                    out[name] = 0.0
                    continue
                se = math.sqrt(math.pi / 3) * sigma * math.sqrt(1 / nb + 1 / na)
                out[name] = abs(math.log(ratio)) / se
    return out


def test_peer_deviation_alerts_are_well_formed(fleet: Fleet) -> None:
    assert "peer_deviation" in ALERT_KINDS
    assert "peer_deviation" in LABEL_TO_ALERT["under_registration"]
    with_reference = {r["instrument"] for r in fleet.labels if r["reference_quantity"]}
    peer = [a for a in fleet.alerts if a.kind == "peer_deviation"]
    assert peer
    for a in peer:
        assert a.instrument not in with_reference
        assert a.severity in ("warning", "critical")
        assert set(a.evidence) >= {"step_day", "step_percent", "z", "peers"}
        assert (a.severity == "critical") == (abs(a.evidence["step_percent"]) >= 15.0)


def test_under_registration_without_reference_is_found(fleet: Fleet) -> None:
    expected = _expected_z(fleet)
    labels = {r["instrument"]: r for r in fleet.labels}
    peer = {a.instrument: a for a in fleet.alerts if a.kind == "peer_deviation"}
    # recall: of the steps the noise lets through with a margin (expected z >= z_min + 1.5)
    detectable = {i for i, z in expected.items() if z >= PeerThresholds().z_min + 1.5}
    assert len(detectable) >= 5, expected
    found = detectable & set(peer)
    assert len(found) >= 0.8 * len(detectable), (sorted(expected.items()), sorted(peer))
    # when found, near the right day (the split of a noisy series: +-3 days) and downwards
    for ins in set(expected) & set(peer):
        f = _under(labels[ins])
        assert f is not None
        a = peer[ins]
        assert abs((a.at - f["start"]).total_seconds()) <= 3 * 86400, (a, f)
        assert a.evidence["step_percent"] < 0
    # false alerts: instruments without the label, clean or with another fault
    false = [i for i in peer if _under(labels[i]) is None]
    assert len(false) <= 2, [(i, labels[i]["faults"], peer[i].evidence) for i in false]


def test_scoring_counts_peer_deviation_as_under_registration(fleet: Fleet) -> None:
    without = [r["instrument"] for r in fleet.labels if r["reference_quantity"] is None]
    s = score_alerts(fleet.alerts, fleet.labels, only=without)["under_registration"]
    down = {
        a.instrument
        for a in fleet.alerts
        if a.kind == "peer_deviation" and a.evidence["step_percent"] < 0
    }
    assert s.tp + s.fp == len(down)
    assert s.precision >= 0.8, s


def test_only_a_step_down_is_evidence_of_under_registration() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)

    def step(ins: str, percent: float) -> Alert:
        return Alert(ins, "peer_deviation", "critical", at, {"step_percent": percent})

    def label(ins: str, *kinds: str) -> dict[str, Any]:
        return {"instrument": ins, "faults": [{"kind": k} for k in kinds]}

    down, up = step("A", -18.0), step("B", 22.0)
    assert finds(down, "under_registration") and not finds(up, "under_registration")
    assert not finds(down, "seal_broken")
    labels = [label("A", "under_registration"), label("B"), label("C", "under_registration")]
    s = score_alerts([down, up], labels)["under_registration"]
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    # a rise on an under-registered meter does not find it either
    s = score_alerts([step("C", 30.0)], labels)["under_registration"]
    assert (s.tp, s.fp, s.fn) == (0, 0, 2)


def test_duckdb_and_spark_give_the_same_steps(fleet: Fleet) -> None:
    require_java()
    from metrocloud.lake.spark_engine import SMALL_LAKE_CONF, SparkEngine, local_session

    session = local_session("local[2]", conf=SMALL_LAKE_CONF)
    lake = Lake.open(fleet.node.settings.lake_path())
    spark = SparkEngine(lake, session=session)
    try:
        reg = _registry(fleet.node)
        cats = {i.category for i in reg.values()}
        want = peer_deviation_steps(fleet.engine, cats, None, None, registered=reg)
        got = peer_deviation_steps(spark, cats, None, None, registered=reg)
        assert want and got == want
        first = datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(days=3)
        window = (first, first + timedelta(days=20))
        assert peer_deviation_steps(spark, cats, *window, registered=reg) == (
            peer_deviation_steps(fleet.engine, cats, *window, registered=reg)
        )
    finally:
        spark.close()
        session.stop()


def test_a_window_keeps_whole_days_only() -> None:
    from metrocloud.lake.engine import whole_days as _whole_days

    midnight = datetime(2026, 3, 2, tzinfo=UTC)
    assert _whole_days(None, None) == (None, None)
    assert _whole_days(midnight, midnight + timedelta(days=3)) == (
        date(2026, 3, 2),
        date(2026, 3, 5),
    )
    # a partial first or last day would look like a step of every instrument: left out
    assert _whole_days(midnight + timedelta(hours=6), midnight + timedelta(days=3, hours=6)) == (
        date(2026, 3, 3),
        date(2026, 3, 5),
    )
