"""Consumption profiles of the simulated categories: what really flows through a meter.

Each profile draws one instrument-day of TRUE consumption: the reading times (milliseconds
after the day's midnight, UTC) and the true increments (in the register's smallest unit:
Wh, litres, centilitres). Everything a profile draws comes from the random generator it is
given, so an instrument-day depends only on the run's seed, the instrument and the day.

Two reading disciplines:

- *snapshot* registers (electricity, gas, water) are read on a fixed grid; the reading at
  ``t[k]`` is the register before increment ``k`` (the consumption of ``[t[k], t[k+1])``);
- *transaction* registers (fuel dispensers, EV charging points) are read at the end of each
  transaction (and, for EV, at its start); the reading at ``t[k]`` is the register after
  increment ``k``.

Random draws use Python's :class:`random.Random` and fixed lookup tables only (no numpy), so
the same seed gives the same readings on every platform Python runs on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.mpe import Line, MpeRule, Zone, in_service_factor, mpe

__all__ = [
    "DAY_MS",
    "PROFILES",
    "DayContext",
    "Profile",
    "day_context",
    "outdoor_temperature",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_QUARTER_MS = 900_000
#: readings of transaction registers keep this far from midnight (room for the reference
#: reading 1 ms after the day's last reading, before the next day's first)
_MARGIN_MS = 60_000


@dataclass(frozen=True, slots=True)
class DayContext:
    """What all instruments share on one simulated day."""

    #: 0 for the first simulated day
    index: int
    #: epoch ms of the day's midnight (UTC)
    start_ms: int
    #: day of the year, 0 = 1 January
    day_of_year: int
    weekend: bool
    #: daily mean outdoor temperature (°C): seasonal curve plus a weather anomaly
    temperature: float


def _seasonal_temperature(day_of_year: int) -> float:
    """Central European daily mean: 10 °C on average, coldest mid-January (±9 °C)."""
    return 10.0 - 9.0 * math.cos(2 * math.pi * (day_of_year - 15) / 365.0)


def outdoor_temperature(seed: int, ordinal: int, day_of_year: int) -> float:
    """The day's mean outdoor temperature: seasonal curve plus a weather anomaly that
    persists over a few days (a moving average of per-day draws, so no state is needed)."""
    anomaly = 0.0
    for lag, weight in ((0, 0.5), (1, 0.3), (2, 0.2)):
        anomaly += weight * random.Random(f"metrocloud-sim/weather/{seed}/{ordinal - lag}").gauss(
            0.0, 4.0
        )
    return _seasonal_temperature(day_of_year) + anomaly


def day_context(seed: int, index: int, start_ms: int) -> DayContext:
    """The shared context of simulated day ``index`` of a run starting at ``start_ms``."""
    from datetime import UTC, datetime

    day_ms = start_ms + index * DAY_MS
    d = datetime.fromtimestamp(day_ms / 1000, UTC).date()
    doy = d.timetuple().tm_yday - 1
    return DayContext(
        index=index,
        start_ms=day_ms,
        day_of_year=doy,
        weekend=d.weekday() >= 5,
        temperature=outdoor_temperature(seed, d.toordinal(), doy),
    )


# -- shared helpers ---------------------------------------------------------------------------


def _lognormal_table(sigma: float) -> tuple[float, ...]:
    """256 quantiles of a lognormal with mean 1: multiplicative noise from one random byte."""
    normal = NormalDist()
    raw = [math.exp(sigma * normal.inv_cdf((i + 0.5) / 256)) for i in range(256)]
    mean = sum(raw) / 256
    return tuple(x / mean for x in raw)


def _bumps(slots: int, base: float, peaks: Sequence[tuple[float, float, float]]) -> list[float]:
    """A daily shape on ``slots`` slots: base plus Gaussian peaks (hour, width h, height),
    normalized to mean 1."""
    hours = [(i + 0.5) * 24 / slots for i in range(slots)]
    shape = [
        base + sum(h * math.exp(-0.5 * ((x - at) / w) ** 2) for at, w, h in peaks) for x in hours
    ]
    mean = sum(shape) / slots
    return [s / mean for s in shape]


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; for large means a rounded normal)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


_NOISE_35 = _lognormal_table(0.35)
_NOISE_25 = _lognormal_table(0.25)

# -- electricity (MI-003): 15-minute snapshots of 1-0:1.8.0 ------------------------------------

_E_T = tuple(k * _QUARTER_MS for k in range(96))
_E_WEEKDAY = _bumps(96, 0.55, ((7.25, 1.0, 0.9), (12.5, 1.5, 0.45), (19.5, 1.8, 1.4)))
_E_WEEKEND = _bumps(96, 0.55, ((9.5, 1.5, 0.8), (13.0, 2.0, 0.7), (19.0, 2.0, 1.3)))
_E_WEEKDAY_96 = [s / 96 for s in _E_WEEKDAY]
_E_WEEKEND_96 = [s / 96 for s in _E_WEEKEND]


def _electricity(
    rng: random.Random, ctx: DayContext, params: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Household load: night base load, morning and (larger) evening peaks, a later and
    flatter weekend, 18 % more in winter (light, heating aids); kWh a year = params[0]."""
    annual_kwh = params[0]
    season = 1.0 + 0.18 * math.cos(2 * math.pi * (ctx.day_of_year - 15) / 365.0)
    weekend = 1.08 if ctx.weekend else 1.0
    daily_wh = annual_kwh * 1000 / 365.0 * season * weekend * _NOISE_25[rng.getrandbits(8)]
    shape = _E_WEEKEND_96 if ctx.weekend else _E_WEEKDAY_96
    noise = _NOISE_35
    inc = [daily_wh * s * noise[b] for s, b in zip(shape, rng.randbytes(96), strict=True)]
    return list(_E_T), inc


# -- gas (MI-002): hourly snapshots, heating follows the outdoor temperature --------------------

_H_T = tuple(h * HOUR_MS for h in range(24))
_GAS_HEATING = _bumps(24, 0.55, ((6.5, 1.2, 1.3), (18.5, 2.5, 0.7)))
_GAS_WATER = _bumps(24, 0.2, ((7.0, 1.0, 1.5), (20.0, 1.5, 1.0)))
#: heating degree days (base 15.5 °C) of the seasonal curve over a year
_HDD_YEAR = sum(max(0.0, 15.5 - _seasonal_temperature(d)) for d in range(365))


def _gas(
    rng: random.Random, ctx: DayContext, params: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Space heating proportional to heating degree days (base 15.5 °C, from the day's
    outdoor temperature) plus hot water and cooking (15 % of the year); m³ a year =
    params[0]; increments in litres (0.001 m³)."""
    annual_l = params[0] * 1000
    heating_l = 0.85 * annual_l / _HDD_YEAR * max(0.0, 15.5 - ctx.temperature)
    water_l = 0.15 * annual_l / 365.0 * _NOISE_25[rng.getrandbits(8)]
    noise = _NOISE_25
    inc = [
        (heating_l * h + water_l * w) / 24 * noise[b]
        for h, w, b in zip(_GAS_HEATING, _GAS_WATER, rng.randbytes(24), strict=True)
    ]
    return list(_H_T), inc


# -- water (MI-001): hourly snapshots of bursty use ---------------------------------------------

#: (litres per use, uses per person and day): toilet, shower, tap, washing machine, dishwasher
_WATER_USES = ((6.0, 5.0), (45.0, 0.8), (1.5, 12.0), (55.0, 0.25), (12.0, 0.15))
_WATER_VOLUMES = [v for v, _ in _WATER_USES]
_WATER_CUM: list[float] = []
for _v, _rate in _WATER_USES:
    _WATER_CUM.append((_WATER_CUM[-1] if _WATER_CUM else 0.0) + _rate)
_WATER_RATE = _WATER_CUM[-1]
_WATER_WEEKDAY = [
    w / 24 for w in _bumps(24, 0.08, ((7.0, 0.8, 1.6), (12.5, 1.0, 0.4), (20.0, 2.0, 0.9)))
]
_WATER_WEEKEND = [
    w / 24 for w in _bumps(24, 0.08, ((9.0, 1.2, 1.4), (13.0, 1.5, 0.6), (19.5, 2.0, 0.9)))
]


def _water(
    rng: random.Random, ctx: DayContext, params: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Bursty household use: each hour a Poisson number of uses (toilet, shower, tap,
    washing machine, dishwasher) following a daily rhythm; params[0] persons; litres."""
    persons = params[0]
    per_day = _WATER_RATE * persons * (1.1 if ctx.weekend else 1.0)
    weights = _WATER_WEEKEND if ctx.weekend else _WATER_WEEKDAY
    inc: list[float] = []
    for w in weights:
        n = _poisson(rng, per_day * w)
        if n:
            inc.append(
                sum(rng.choices(_WATER_VOLUMES, cum_weights=_WATER_CUM, k=n))
                * (0.7 + 0.6 * rng.random())
            )
        else:
            inc.append(0.0)
    return list(_H_T), inc


# -- fuel dispensers (MI-005): a reading after each transaction ---------------------------------

_FUEL_HOURS = [
    w / 24 for w in _bumps(24, 0.04, ((8.0, 1.5, 1.3), (12.5, 2.0, 0.8), (17.5, 1.8, 1.4)))
]


def _fuel(
    rng: random.Random, ctx: DayContext, params: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Transactions at a Poisson rate with a daily rhythm (params[0] a day); volumes
    lognormal around 35 L (2 to 150 L); increments in centilitres."""
    per_day = params[0] * (0.85 if ctx.weekend else 1.0)
    t: list[int] = []
    inc: list[float] = []
    for h, w in enumerate(_FUEL_HOURS):
        n = _poisson(rng, per_day * w)
        if not n:
            continue
        lo = max(h * 3600, _MARGIN_MS // 1000)
        hi = min((h + 1) * 3600, (DAY_MS - _MARGIN_MS) // 1000)
        seconds = sorted(rng.sample(range(lo, hi), min(n, hi - lo)))
        t.extend(s * 1000 for s in seconds)
        inc.extend(
            min(150.0, max(2.0, math.exp(3.38 + 0.6 * rng.gauss(0.0, 1.0)))) * 100 for _ in seconds
        )
    return t, inc


# -- EV charging points (DE-EV): readings at the start and the end of each session ------------

_EV_ARRIVALS = _bumps(24, 0.1, ((8.5, 1.5, 1.0), (13.0, 2.0, 0.6), (18.0, 1.8, 1.1)))


def _ev(
    rng: random.Random, ctx: DayContext, params: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Sessions at a Poisson rate (params[0] a day), one after the other; energy lognormal
    (mean about 18 kWh, 1 to 80 kWh), charged at params[1] kW; increments in Wh."""
    sessions, power_kw = params[0], params[1]
    n = _poisson(rng, sessions)
    if not n:
        return [], []
    hours = rng.choices(range(24), weights=_EV_ARRIVALS, k=n)
    arrivals = sorted(h * 3600 + rng.randrange(3600) for h in hours)
    t: list[int] = []
    inc: list[float] = []
    free = _MARGIN_MS // 1000
    last = (DAY_MS - _MARGIN_MS) // 1000
    for arrival in arrivals:
        begin = max(arrival, free)
        if begin >= last - 120:
            break
        kwh = min(80.0, max(1.0, math.exp(2.7 + 0.55 * rng.gauss(0.0, 1.0))))
        seconds = int(kwh / power_kw * 3600) + 300  # plug-in, hand-shake, tapering
        end = min(begin + seconds, last)
        if end < begin + seconds:
            kwh *= (end - begin) / seconds
        t += [begin * 1000, end * 1000]
        inc += [0.0, kwh * 1000]
        free = end + 60
    return t, inc


# -- the profiles -------------------------------------------------------------------------------

Draw = Callable[[random.Random, DayContext, Sequence[float]], tuple[list[int], list[float]]]


@dataclass(frozen=True, slots=True)
class Profile:
    """One simulated category: its register, cadence, type and consumption model."""

    key: str
    category: InstrumentCategory
    model: str
    accuracy_class: str
    quantity: str
    unit: str
    #: register units per unit of ``value`` (1000: Wh in kWh, litres in m³; 100: cl in L)
    scale: int
    #: the fixed reading interval; None for transaction registers
    interval_ms: int | None
    #: the reading at t[k] is the register before increment k (else after it)
    snapshot: bool
    #: share of a mixed fleet
    weight: float
    #: code in serial numbers
    code: str
    #: how an instrument's size parameters are drawn
    sizes: Callable[[random.Random], tuple[float, ...]]
    draw: Draw

    @property
    def reference_quantity(self) -> str:
        return f"{self.quantity}*ref"

    def mpe_rule(self) -> MpeRule:
        """The MPE in normal operation (upper flow or current zone, 20 °C)."""
        c = self.category
        if c is InstrumentCategory.MI_005:
            return mpe(c, self.accuracy_class, line=Line.A)
        if c is InstrumentCategory.MI_002:
            return mpe(c, self.accuracy_class, zone=Zone.UPPER)
        if c is InstrumentCategory.DE_EV:
            # no national EV table in domain/mpe: the charging point's meter is an
            # MI-003 meter of the certificate's class
            return mpe(
                InstrumentCategory.MI_003, self.accuracy_class, zone=Zone.UPPER, temperature=20
            )
        return mpe(c, self.accuracy_class, zone=Zone.UPPER, temperature=20)

    def mpe_limit(self, country: str) -> Decimal:
        """The in-service MPE (percent) in ``country``: the rule times its factor."""
        return self.mpe_rule().limit(in_service_factor(country))


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


PROFILES: dict[str, Profile] = {
    p.key: p
    for p in (
        Profile(
            key="electricity",
            category=InstrumentCategory.MI_003,
            model="SIM-E1 household electricity meter",
            accuracy_class="B",
            quantity="1-0:1.8.0",
            unit="kWh",
            scale=1000,
            interval_ms=_QUARTER_MS,
            snapshot=True,
            weight=0.40,
            code="E",
            sizes=lambda r: (round(_clip(r.lognormvariate(math.log(3000), 0.45), 800, 12000), 1),),
            draw=_electricity,
        ),
        Profile(
            key="gas",
            category=InstrumentCategory.MI_002,
            model="SIM-G4 diaphragm gas meter",
            accuracy_class="1.5",
            quantity="7-0:3.0.0",
            unit="m³",
            scale=1000,
            interval_ms=HOUR_MS,
            snapshot=True,
            weight=0.20,
            code="G",
            sizes=lambda r: (round(_clip(r.lognormvariate(math.log(1300), 0.4), 300, 5000), 1),),
            draw=_gas,
        ),
        Profile(
            key="water",
            category=InstrumentCategory.MI_001,
            model="SIM-W25 household water meter",
            accuracy_class="2",
            quantity="8-0:1.0.0",
            unit="m³",
            scale=1000,
            interval_ms=HOUR_MS,
            snapshot=True,
            weight=0.20,
            code="W",
            sizes=lambda r: (float(r.choices((1, 2, 3, 4, 5), weights=(35, 33, 14, 12, 6))[0]),),
            draw=_water,
        ),
        Profile(
            key="fuel",
            category=InstrumentCategory.MI_005,
            model="SIM-F2 fuel dispenser",
            accuracy_class="0.5",
            quantity="V-tot",
            unit="L",
            scale=100,
            interval_ms=None,
            snapshot=False,
            weight=0.10,
            code="F",
            sizes=lambda r: (round(r.uniform(40, 140), 1),),
            draw=_fuel,
        ),
        Profile(
            key="ev",
            category=InstrumentCategory.DE_EV,
            model="SIM-C1 EV charging point",
            accuracy_class="B",
            quantity="1-0:1.8.0",
            unit="kWh",
            scale=1000,
            interval_ms=None,
            snapshot=False,
            weight=0.10,
            code="C",
            sizes=lambda r: (
                round(r.uniform(0.8, 6.0), 2),
                r.choices((11.0, 22.0, 50.0), weights=(60, 25, 15))[0],
            ),
            draw=_ev,
        ),
    )
}
