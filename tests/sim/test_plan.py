"""The fleet plan and the instrument-day generator, without a node."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from metrocloud.domain.errors import InvalidInput
from metrocloud.formats.batches import encode_batch, parse_payload, split_wire, verify_batch
from metrocloud.sim import KINDS, PROFILES, plan_fleet
from metrocloud.sim.generate import (
    device_key,
    initial_states,
    install,
    payload_bytes,
    simulate_day,
)
from metrocloud.sim.plan import AREA_PROFILES
from metrocloud.sim.profiles import DAY_MS
from metrocloud.sim.runner import _chunks
from metrocloud.trust.canonical import canonical_json

START = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
SOFTWARE = {k: ("a" * 64, "b" * 64) for k in PROFILES}


def test_the_plan_is_deterministic_for_a_seed() -> None:
    a = plan_fleet(seed=7, instruments=300, days=30, start_ms=START)
    b = plan_fleet(seed=7, instruments=300, days=30, start_ms=START)
    c = plan_fleet(seed=8, instruments=300, days=30, start_ms=START)
    assert a == b
    assert a != c


def test_every_category_kind_and_a_crossing_appear_in_a_small_fleet() -> None:
    plan = plan_fleet(seed=3, instruments=20, days=3, start_ms=START)
    assert {p.profile for p in plan.instruments} == set(PROFILES)
    kinds = [f.kind for p in plan.instruments for f in p.faults]
    assert set(kinds) == set(KINDS)
    assert any(p.crossing_ms is not None for p in plan.instruments)
    for p in plan.instruments:
        for f in p.faults:
            assert START <= f.start_ms < plan.end_ms
            assert f.end_ms is None or f.start_ms <= f.end_ms <= plan.end_ms
            if f.kind == "unapproved_software":  # the software is named per (daily) batch
                assert (f.start_ms - START) % DAY_MS == 0


def test_drift_crosses_the_in_service_mpe_exactly_at_the_labelled_time() -> None:
    plan = plan_fleet(seed=5, instruments=400, days=365, start_ms=START)
    crossing = [p for p in plan.instruments if p.crossing_ms is not None]
    assert len(crossing) == 20  # 5 %
    for p in plan.instruments:
        # the in-service MPE of DE: twice the MID's (MessEV § 22)
        expected = float(PROFILES[p.profile].mpe_limit("DE"))
        assert p.mpe_limit == expected
        at_end = abs(p.error_at(plan.end_ms, START))
        if p.crossing_ms is None:
            assert max(abs(p.initial_error), at_end) < 0.9 * p.mpe_limit
            continue
        assert START < p.crossing_ms < plan.end_ms
        assert math.isclose(abs(p.error_at(p.crossing_ms, START)), p.mpe_limit, rel_tol=1e-9)
        assert abs(p.error_at(p.crossing_ms - 60_000, START)) < p.mpe_limit
        assert abs(p.error_at(p.crossing_ms + 60_000, START)) > p.mpe_limit
    assert all(p.drift_rate != 0 for p in crossing)


def test_balance_areas_group_a_share_of_each_category_behind_an_area_meter() -> None:
    plan = plan_fleet(seed=9, instruments=2000, days=30, start_ms=START, balance_share=0.75)
    assert plan.fleet_size == 2000
    fleet, meters = plan.instruments[:2000], plan.instruments[2000:]
    assert not any(p.area_meter for p in fleet) and all(p.area_meter for p in meters)
    assert len(meters) == len(plan.areas) > 0
    seen: set[int] = set()
    for area in plan.areas:
        meter = plan.instruments[area.meter]
        members = [plan.instruments[i] for i in area.members]
        assert meter.area == area.id and not meter.faults and meter.crossing_ms is None
        bounds = AREA_PROFILES[meter.profile]
        # the last group of a category may take in a remainder smaller than the minimum
        assert bounds.min_members <= len(members) < bounds.max_members + bounds.min_members
        assert {m.profile for m in members} == {meter.profile}
        assert {m.region for m in members} == {meter.region}
        assert all(m.area == area.id and not m.area_meter for m in members)
        assert not seen & set(area.members)
        seen |= set(area.members)
        assert 0 < area.loss <= 1.5 * bounds.loss and area.loss_noise == bounds.loss_noise
    assert {p.index for p in fleet if p.area is not None} == seen
    assert 0.7 * 2000 < len(seen) < 0.8 * 2000
    for key in PROFILES:
        share = sum(1 for p in fleet if p.profile == key and p.area) / sum(
            1 for p in fleet if p.profile == key
        )
        assert 0.6 < share < 0.9, (key, share)


def test_balance_areas_leave_the_rest_of_the_fleet_as_it_was() -> None:
    """The areas are drawn from a random stream of their own: with or without them, the
    instruments' drift, faults and sizes are the same (a member takes its area's region)."""
    with_areas = plan_fleet(seed=4, instruments=500, days=30, start_ms=START)
    without = plan_fleet(seed=4, instruments=500, days=30, start_ms=START, balance_share=0)
    assert without.areas == () and len(without.instruments) == 500
    for a, b in zip(with_areas.instruments, without.instruments, strict=False):
        assert (a.serial, a.profile, a.params, a.faults, a.drift_rate, a.crossing_ms) == (
            b.serial,
            b.profile,
            b.params,
            b.faults,
            b.drift_rate,
            b.crossing_ms,
        )
        assert a.region == b.region or a.area is not None


def test_bad_plans_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least one instrument"):
        plan_fleet(seed=1, instruments=0, days=1, start_ms=START)
    with pytest.raises(InvalidInput, match="unknown fault kind"):
        plan_fleet(seed=1, instruments=5, days=1, start_ms=START, rates={"gremlins": 1})
    with pytest.raises(InvalidInput, match="unknown category"):
        plan_fleet(seed=1, instruments=5, days=1, start_ms=START, categories=["heat"])
    with pytest.raises(InvalidInput, match="balance_share"):
        plan_fleet(seed=1, instruments=5, days=1, start_ms=START, balance_share=1.5)


@pytest.mark.parametrize(
    "values", [[0, 1, 2], [1234.567, 0.001, 10**12, -2.25, 7], [0.5, 99999999.999]]
)
def test_orjson_payloads_are_rfc8785_for_the_values_the_simulator_shows(
    values: list[int | float],
) -> None:
    fields = {
        "counter": 1,
        "instrument": "ins-DE-X",
        "key": "c" * 64,
        "prev": "0" * 64,
        "quantity": "8-0:1.0.0",
        "software": "a" * 64,
        "status": [0] * len(values),
        "t": list(range(1, len(values) + 1)),
        "unit": "m³",
        "v": 1,
        "value": values,
    }
    assert payload_bytes(fields) == canonical_json(fields)


def test_generated_batches_are_what_encode_batch_makes_and_verify() -> None:
    plan = plan_fleet(seed=2, instruments=25, days=4, start_ms=START, reference_share=0.5)
    assert plan.areas  # and their meters sign like the rest
    install(plan, SOFTWARE)
    states = initial_states(plan, [f"ins-DE-{i:026d}" for i in range(len(plan.instruments))])
    # as the runner hands them to a task: an area's meter after its members
    [states] = _chunks(plan, states, 10**6)
    seen_ref = False
    meters = {a.meter for a in plan.areas}
    seen_meters: set[int] = set()
    for day in range(4):
        lines, states = simulate_day(day, states)
        for line in lines:
            payload, signature = split_wire(line)
            p = parse_payload(payload)
            index = int(p.instrument[-7:])
            key = device_key(2, plan.instruments[index].serial)
            verify_batch(payload, signature, key.public_key)
            again = encode_batch(
                key,
                instrument=p.instrument,
                counter=p.counter,
                prev=p.prev,
                software=p.software,
                quantity=p.quantity,
                unit=p.unit,
                t=p.t,
                value=p.value,
                status=p.status,
            )
            assert again.payload == payload
            seen_ref |= p.quantity.endswith("*ref")
            if index in meters:
                seen_meters.add(index)
                assert p.counter == day + 1 and p.software == "a" * 64
    assert seen_ref
    assert seen_meters == meters
