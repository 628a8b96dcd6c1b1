"""The fleet plan: every instrument's ground truth, drawn up front from the seed.

A plan fixes, per instrument, everything that is not consumption: its category and size,
whether a reference (check) meter runs in series, its metrological drift, and the faults and
tampering injected into it, each with its start, end and parameters. The labels are the plan
(plus totals measured while simulating); the readings follow from the plan and the seed.

Balance areas (``balance_share`` of the instruments): the instruments a grid or site operator
meters as a whole, as it does to find losses and theft: the households on one low-voltage
feeder (electricity), the flats of one building behind its main gas or water meter, the
dispensers of one filling station against its tank gauges (wet-stock reconciliation), the
charging points of one site behind its grid connection meter. Each area is one category in
one region, has an *area meter* of its own (an instrument of the plan, appended after the
fleet's ``instruments``, without faults) that registers the members' true consumption plus
the area's losses (a share of the supply, with day-to-day noise), and is recorded in the
registry with the ``put_into_service`` events (``details.balance_area``).

Drift model (percent of the true quantity): ``error(t) = e0 + rate * (t - start)`` with
``t`` in years; the registered quantity is ``true * (1 + error / 100)``. A share of the
instruments (``crossing_share``) is given a rate that makes ``|error|`` reach the in-service
MPE at a drawn time inside the horizon (``crossing_ms``); the others stay below 90 % of it
over the whole horizon.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from metrocloud.domain.errors import InvalidInput
from metrocloud.sim.profiles import DAY_MS, HOUR_MS, PROFILES

__all__ = [
    "AREA_PROFILES",
    "FAULT_KINDS",
    "KINDS",
    "TAMPER_KINDS",
    "YEAR_MS",
    "AreaProfile",
    "BalanceArea",
    "Fault",
    "FleetPlan",
    "InstrumentPlan",
    "plan_fleet",
]

YEAR_MS = 365 * DAY_MS

#: technical faults
FAULT_KINDS = ("stuck_register", "clock_drift", "counter_reset", "reverse_flow")
#: manipulation
TAMPER_KINDS = ("seal_broken", "unapproved_software", "under_registration")
KINDS = FAULT_KINDS + TAMPER_KINDS

#: default probability per instrument and kind over the horizon
DEFAULT_RATES: Mapping[str, float] = {
    "stuck_register": 0.02,
    "clock_drift": 0.03,
    "counter_reset": 0.01,
    "reverse_flow": 0.01,
    "seal_broken": 0.01,
    "unapproved_software": 0.005,
    "under_registration": 0.01,
}


@dataclass(frozen=True, slots=True)
class AreaProfile:
    """How one category's balance areas are drawn: the members per area, and the losses
    between the area meter and the members' registers (a share of the supply, with a
    day-to-day standard deviation, both fractions)."""

    min_members: int
    max_members: int
    loss: float
    loss_noise: float
    #: what the area is, in the operator's words (docs/sim.md)
    what: str


AREA_PROFILES: Mapping[str, AreaProfile] = {
    "electricity": AreaProfile(8, 30, 0.03, 0.003, "low-voltage feeder"),
    "gas": AreaProfile(4, 16, 0.01, 0.004, "building (main gas meter)"),
    "water": AreaProfile(4, 16, 0.02, 0.008, "building (main water meter)"),
    "fuel": AreaProfile(4, 12, 0.002, 0.003, "filling station (tank gauges)"),
    "ev": AreaProfile(2, 10, 0.015, 0.002, "charging site (grid connection meter)"),
}

_NUTS = ("DE11", "DE21", "DE30", "DE40", "DE60", "DE71", "DE91", "DEA1", "DEB3", "DEE0")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault or manipulation: ``[start_ms, end_ms)``; end None: to the end."""

    kind: str
    start_ms: int
    end_ms: int | None
    params: Mapping[str, Any] = field(default_factory=dict)

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms and (self.end_ms is None or t_ms < self.end_ms)

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether the fault is in effect somewhere in ``[lo, hi)`` (instants: at ``start``)."""
        if self.end_ms is not None and self.end_ms <= self.start_ms:
            return lo <= self.start_ms < hi
        return self.start_ms < hi and (self.end_ms is None or self.end_ms > lo)


@dataclass(frozen=True, slots=True)
class InstrumentPlan:
    """The ground truth of one simulated instrument."""

    index: int
    serial: str
    profile: str
    params: tuple[float, ...]
    region: str
    #: register value at the start, in register units
    initial_units: int
    #: a reference (check) meter in series reports the true register once a day
    has_reference: bool
    #: relative error at the start (percent)
    initial_error: float
    #: drift of the relative error (percent per year)
    drift_rate: float
    #: in-service MPE (percent) the drift is compared with
    mpe_limit: float
    #: when |error| first exceeds ``mpe_limit`` (epoch ms), if inside the horizon
    crossing_ms: int | None
    faults: tuple[Fault, ...]
    #: the balance area the instrument belongs to (as a member or as its area meter)
    area: str | None = None
    #: this instrument is the area meter of ``area`` (not one of the fleet's instruments)
    area_meter: bool = False

    def error_at(self, t_ms: int, start_ms: int) -> float:
        """The drift error (percent) at ``t_ms``."""
        return self.initial_error + self.drift_rate * (t_ms - start_ms) / YEAR_MS


@dataclass(frozen=True, slots=True)
class BalanceArea:
    """One balance area: its meter and its members (plan indexes), and its losses."""

    id: str
    meter: int
    members: tuple[int, ...]
    loss: float
    loss_noise: float


@dataclass(frozen=True, slots=True)
class FleetPlan:
    seed: int
    start_ms: int
    days: int
    #: the fleet's instruments, then the area meters (``area_meter``)
    instruments: tuple[InstrumentPlan, ...]
    areas: tuple[BalanceArea, ...] = ()

    @property
    def fleet_size(self) -> int:
        """The instruments asked for (the area meters come on top)."""
        return sum(1 for p in self.instruments if not p.area_meter)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    def max_clock_offset_ms(self) -> tuple[int, int]:
        """(most negative, most positive) clock offset any instrument reaches."""
        lo = hi = 0
        for p in self.instruments:
            for f in p.faults:
                if f.kind == "clock_drift":
                    off = int(
                        f.params["seconds_per_day"] * 1000 * (self.end_ms - f.start_ms) / DAY_MS
                    )
                    lo, hi = min(lo, off), max(hi, off)
        return lo, hi


def device_seed(seed: int, serial: str) -> bytes:
    """The 32 bytes of an instrument's Ed25519 device key (derived, never stored)."""
    return hashlib.sha256(f"metrocloud-sim/device-key/{seed}/{serial}".encode()).digest()


def _categories(rng: random.Random, n: int, only: Sequence[str] | None) -> list[str]:
    keys = list(only) if only else list(PROFILES)
    weights = [PROFILES[k].weight for k in keys]
    out = keys[: min(n, len(keys))]  # every category at least once
    out += rng.choices(keys, weights=weights, k=n - len(out))
    return out


def _drift(
    rng: random.Random, limit: float, crossing: bool, start_ms: int, end_ms: int
) -> tuple[float, float, int | None]:
    """(initial error, rate per year, crossing time) of one instrument."""
    horizon_years = (end_ms - start_ms) / YEAR_MS
    e0 = round(rng.uniform(-0.25, 0.25) * limit, 6)
    if crossing:
        span = end_ms - start_ms
        at = start_ms + int(span * rng.uniform(0.2, 0.85))
        at -= at % 1000  # whole seconds
        sign = rng.choice((-1.0, 1.0))
        rate = (sign * limit - e0) / ((at - start_ms) / YEAR_MS)
        return e0, rate, at
    rate = rng.gauss(0.0, 0.15 * limit)
    # stay below 90 % of the limit over the horizon
    room = 0.9 * limit - abs(e0)
    if abs(rate) * horizon_years > room:
        rate = math.copysign(room / horizon_years * rng.uniform(0.2, 1.0), rate)
    return e0, rate, None


def _fault(rng: random.Random, kind: str, start_ms: int, end_ms: int, days: int) -> Fault:
    span = end_ms - start_ms

    def at(lo: float, hi: float) -> int:
        t = start_ms + int(span * rng.uniform(lo, hi))
        return t - t % 1000

    if kind == "stuck_register":
        s = at(0.05, 0.8)
        e = s + int(rng.uniform(6 * HOUR_MS, 14 * DAY_MS))
        return Fault(kind, s, None if e >= end_ms else e, {})
    if kind == "clock_drift":
        s = at(0.0, 0.5)
        rate = rng.choice((-1.0, 1.0)) * round(rng.uniform(2.0, 20.0), 2)
        return Fault(kind, s, None, {"seconds_per_day": rate})
    if kind == "counter_reset":
        s = at(0.1, 0.9)
        return Fault(kind, s, s, {"to": 0})
    if kind == "reverse_flow":
        s = at(0.05, 0.85)
        e = s + int(rng.uniform(2 * HOUR_MS, 3 * DAY_MS))
        return Fault(kind, s, None if e >= end_ms else e, {})
    if kind == "seal_broken":
        s = at(0.1, 0.9)
        return Fault(kind, s, None, {"tamper_detected": rng.random() < 0.5})
    if kind == "unapproved_software":
        # the software in effect is named per batch (a day): changes at midnight
        first = rng.randrange(1, days) if days > 1 else 0
        until: int | None = None
        if first + 1 < days and rng.random() < 0.5:
            until = start_ms + rng.randrange(first + 1, days) * DAY_MS
        return Fault(kind, start_ms + first * DAY_MS, until, {"version": "1.0.0-mod"})
    if kind == "under_registration":
        s = at(0.1, 0.8)
        return Fault(kind, s, None, {"ratio": round(1.0 - rng.uniform(0.08, 0.25), 3)})
    raise InvalidInput(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")


def plan_fleet(
    *,
    seed: int,
    instruments: int,
    days: int,
    start_ms: int,
    country: str = "DE",
    reference_share: float = 0.25,
    crossing_share: float = 0.05,
    balance_share: float = 0.75,
    rates: Mapping[str, float] | None = None,
    categories: Sequence[str] | None = None,
) -> FleetPlan:
    """Draw the plan of a fleet. Every category appears (when ``instruments`` allows), at
    least one instrument crosses its MPE, and every fault and tamper kind whose rate is
    positive is injected at least once (when there are at least as many instruments as
    kinds). About ``balance_share`` of them are grouped into balance areas, whose meters
    come after the ``instruments`` asked for (:attr:`FleetPlan.fleet_size`)."""
    if instruments < 1:
        raise InvalidInput(f"a fleet needs at least one instrument, got {instruments}")
    if days < 1:
        raise InvalidInput(f"a simulation needs at least one day, got {days}")
    if not all(0 <= x <= 1 for x in (reference_share, crossing_share, balance_share)):
        raise InvalidInput(
            "reference_share, crossing_share and balance_share are fractions from 0 to 1"
        )
    for key in categories or ():
        if key not in PROFILES:
            raise InvalidInput(f"unknown category profile {key!r}; known: {', '.join(PROFILES)}")
    rates = dict(DEFAULT_RATES if rates is None else rates)
    for kind in rates:
        if kind not in KINDS:
            raise InvalidInput(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
    rng = random.Random(f"metrocloud-sim/plan/{seed}")
    end_ms = start_ms + days * DAY_MS
    cats = _categories(rng, instruments, categories)
    crossing = set(rng.sample(range(instruments), max(1, round(crossing_share * instruments))))
    if crossing_share == 0:
        crossing = set()
    reference = {i for i in range(instruments) if rng.random() < reference_share}
    # faults: independent draws, then every kind at least once
    kinds_of: list[list[str]] = [[] for _ in range(instruments)]
    for i in range(instruments):
        for kind in KINDS:
            if rng.random() < rates.get(kind, 0.0):
                kinds_of[i].append(kind)
    if instruments >= len(KINDS):
        for kind in KINDS:
            if rates.get(kind, 0.0) > 0 and not any(kind in k for k in kinds_of):
                free = [i for i in range(instruments) if not kinds_of[i]] or list(
                    range(instruments)
                )
                kinds_of[rng.choice(free)].append(kind)
    counters: dict[str, int] = {}
    plans = []
    for i in range(instruments):
        profile = PROFILES[cats[i]]
        limit = float(profile.mpe_limit(country))
        e0, rate, at = _drift(rng, limit, i in crossing, start_ms, end_ms)
        counters[profile.code] = counters.get(profile.code, 0) + 1
        faults = tuple(_fault(rng, kind, start_ms, end_ms, days) for kind in kinds_of[i])
        plans.append(
            InstrumentPlan(
                index=i,
                serial=f"SIM{seed}-{profile.code}{i:07d}",
                profile=profile.key,
                params=profile.sizes(rng),
                region=rng.choice(_NUTS),
                initial_units=rng.randrange(10, 5000) * profile.scale * 10,
                has_reference=i in reference,
                initial_error=e0,
                drift_rate=rate,
                mpe_limit=limit,
                crossing_ms=at,
                faults=faults,
            )
        )
    plans, areas = _balance_areas(plans, seed, balance_share, start_ms, end_ms, country)
    return FleetPlan(
        seed=seed, start_ms=start_ms, days=days, instruments=tuple(plans), areas=tuple(areas)
    )


def _balance_areas(
    plans: list[InstrumentPlan],
    seed: int,
    share: float,
    start_ms: int,
    end_ms: int,
    country: str,
) -> tuple[list[InstrumentPlan], list[BalanceArea]]:
    """Group ``share`` of each category's instruments into balance areas (a random draw of
    their own, so that the fleet above does not depend on it), give each area a meter
    (appended to the plan) and its members the area's region."""
    rng = random.Random(f"metrocloud-sim/areas/{seed}")
    out = list(plans)
    areas: list[BalanceArea] = []
    by_profile: dict[str, list[int]] = {}
    for p in plans:
        by_profile.setdefault(p.profile, []).append(p.index)
    for key in sorted(by_profile):
        ap = AREA_PROFILES.get(key)
        if ap is None or share <= 0:
            continue
        chosen = [i for i in by_profile[key] if rng.random() < share]
        rng.shuffle(chosen)
        groups: list[list[int]] = []
        while chosen:
            size = rng.randint(ap.min_members, ap.max_members)
            groups.append(chosen[:size])
            chosen = chosen[size:]
        if len(groups) > 1 and len(groups[-1]) < ap.min_members:
            rest = groups.pop()
            groups[-1] += rest
        profile = PROFILES[key]
        limit = float(profile.mpe_limit(country))
        for members in groups:
            if len(members) < 2:
                continue
            members.sort()
            index = len(out)
            area_id = f"SIM{seed}-{profile.code}A{len(areas):05d}"
            region = out[members[0]].region
            e0, rate, _ = _drift(rng, limit, False, start_ms, end_ms)
            for i in members:
                out[i] = replace(out[i], area=area_id, region=region)
            out.append(
                InstrumentPlan(
                    index=index,
                    serial=f"{area_id}M",
                    profile=key,
                    params=(),
                    region=region,
                    initial_units=rng.randrange(10, 5000) * profile.scale * 1000,
                    has_reference=False,
                    initial_error=e0,
                    drift_rate=rate,
                    mpe_limit=limit,
                    crossing_ms=None,
                    faults=(),
                    area=area_id,
                    area_meter=True,
                )
            )
            areas.append(
                BalanceArea(
                    id=area_id,
                    meter=index,
                    members=tuple(members),
                    loss=round(ap.loss * rng.uniform(0.5, 1.5), 5),
                    loss_noise=ap.loss_noise,
                )
            )
    return out, areas
