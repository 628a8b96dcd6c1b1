"""The simulated energy register: deterministic, cumulative, a daily profile."""

from __future__ import annotations

import itertools

import pytest

from metrocloud.device import EnergyRegister
from metrocloud.domain.errors import InvalidInput

DAY = 96  # quarter hours
START = 1_767_571_200_000  # 2026-01-05T00:00Z


def test_readings_are_deterministic_however_they_are_batched() -> None:
    register = EnergyRegister(seed=3, next_t=START)
    whole, _ = register.read(2 * DAY)
    values, t = [], []
    for size in (1, 5, 90, 96):
        part, register = register.read(size)
        values += part.value
        t += part.t
    assert t == whole.t and values == whole.value


def test_cumulative_register_at_quarter_hours() -> None:
    readings, after = EnergyRegister(seed=1, next_t=START).read(DAY)
    assert readings.t == [START + i * 900_000 for i in range(DAY)]
    assert readings.value[0] == 0
    assert all(a < b for a, b in itertools.pairwise(readings.value))
    assert after.index == DAY and after.next_t == START + DAY * 900_000
    assert readings.status == [0] * DAY
    assert all(round(v, 3) == v for v in readings.value)  # whole watt-hours


def test_daily_load_profile_has_an_evening_peak() -> None:
    readings, _ = EnergyRegister(seed=9, next_t=START).read(DAY * 7 + 1)
    steps = [b - a for a, b in itertools.pairwise(readings.value)]
    by_hour = [0.0] * 24
    for i, step in enumerate(steps):
        by_hour[((i + 1) // 4) % 24] += step
    assert by_hour[19] > 2 * by_hour[3]  # evening vs night
    daily = readings.value[-1] / 7
    assert 5 < daily < 15  # a household: a few thousand kWh a year


def test_seeds_differ_and_state_round_trips() -> None:
    a, _ = EnergyRegister(seed=1, next_t=START).read(10)
    b, _ = EnergyRegister(seed=2, next_t=START).read(10)
    assert a.value != b.value
    _, after = EnergyRegister(seed=1, next_t=START).read(10)
    assert EnergyRegister.from_state(after.state()) == after


@pytest.mark.parametrize(
    "fields",
    [{"seed": -1}, {"next_t": -5}, {"interval_ms": 10}, {"energy_wh": 1.5}, {"seed": True}],
)
def test_invalid_register_state(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        EnergyRegister(**{"seed": 1, "next_t": START, **fields})  # type: ignore[arg-type]


def test_read_needs_a_positive_count() -> None:
    with pytest.raises(InvalidInput):
        EnergyRegister(seed=1, next_t=START).read(0)
