"""Instrument-days: true consumption -> registered readings -> signed batches.

Runs in worker processes (:class:`multiprocessing.pool.Pool`, the plan installed once per
worker by :func:`install`) or in the caller's process. A task is one simulated day of a
chunk of instruments; their mutable state (register values, batch counter and chain) goes
in with the task and comes back with its result, so any worker can take any task and the
result depends only on the seed.

Per instrument and day:

1. the profile draws the true increments and reading times (:mod:`metrocloud.sim.profiles`);
2. the drift gain ``1 + error(t)/100`` scales each increment into the registered one;
3. active faults and manipulations change the registered increments (under-registration:
   times the ratio; stuck register: 0; reverse flow: negated), reset the register
   (counter reset), shift the device's clock (clock drift), set status bits (seal broken),
   or name unapproved software in the batch (unapproved software);
4. registers are cumulative and shown at their resolution (floor to Wh, litres, cl);
5. one batch holds the day's readings of the register; instruments with a reference meter
   send a second one-reading batch, quantity ``<register>*ref``, stamped 1 ms after the
   day's last reading, holding the TRUE register at that reading;
6. each batch is signed with the instrument's Ed25519 device key (derived from the seed and
   the serial, held in memory only) and chained by counter and ``prev``.

Area meters are simulated in the same task as their members, right after them (the runner
keeps an area in one chunk): an interval register's area meter reads on the members' grid,
each increment the members' true increments of that interval summed; a transaction
register's (a station's tank gauges, a site's grid connection meter) once a day at
23:59:30, the day's true total (not on a day without any). Either way times one plus the
area's losses of the day (the share drawn in the plan, with a normal day-to-day noise) and
then like any register: its own drift gain, cumulated, shown at its resolution, signed.

Payloads are built with orjson (sorted keys, compact). They are byte-identical to
:func:`metrocloud.formats.batches.encode_batch` because values are kept in the forms both
print alike: integers where the value is integral, otherwise floats of at most three
decimals between 0.001 and 10^15 (tests/sim check this against ``encode_batch``).
"""

from __future__ import annotations

import base64
import hashlib
import random
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from math import floor
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from metrocloud.device import StatusFlag
from metrocloud.formats.batches import GENESIS_PREV
from metrocloud.sim.plan import (
    YEAR_MS,
    BalanceArea,
    Fault,
    FleetPlan,
    InstrumentPlan,
    device_seed,
)
from metrocloud.sim.profiles import DAY_MS, PROFILES, DayContext, Profile, day_context
from metrocloud.trust.keys import PrivateKey

__all__ = [
    "MeterState",
    "device_key",
    "initial_states",
    "install",
    "payload_bytes",
    "simulate_day",
    "task",
    "wire",
]

_SEAL = int(StatusFlag.SEAL_BROKEN)
_TAMPER = int(StatusFlag.TAMPER_DETECTED)
_SORT = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps
_b64 = base64.urlsafe_b64encode
_sha256 = hashlib.sha256


@dataclass(slots=True)
class MeterState:
    """What one instrument carries from one day to the next."""

    index: int
    instrument: str
    #: registered register (register units, before the display resolution)
    reg: float
    #: true register: what a perfect meter would show
    true: float
    counter: int = 0
    prev: str = GENESIS_PREV
    #: status bits for the next reading (an event after the day's last reading)
    pending: int = 0
    readings: int = 0
    batches: int = 0
    true_total: float = 0.0
    reg_total: float = 0.0


@dataclass(frozen=True, slots=True)
class _World:
    plan: FleetPlan
    #: profile key -> (approved checksum, unapproved checksum)
    software: dict[str, tuple[str, str]]
    #: area meter index -> its area
    areas: dict[int, BalanceArea]


#: this process's fleet (set by :func:`install`)
_installed: dict[str, _World] = {}
_keys: dict[int, PrivateKey] = {}


def install(plan: FleetPlan, software: dict[str, tuple[str, str]]) -> None:
    """Make ``plan`` this process's fleet (the pool's initializer)."""
    _installed["world"] = _World(plan, software, {a.meter: a for a in plan.areas})
    _keys.clear()


def device_key(seed: int, serial: str) -> PrivateKey:
    return PrivateKey(Ed25519PrivateKey.from_private_bytes(device_seed(seed, serial)))


def _key(plan: InstrumentPlan, seed: int) -> PrivateKey:
    key = _keys.get(plan.index)
    if key is None:
        key = _keys[plan.index] = device_key(seed, plan.serial)
    return key


def payload_bytes(fields: dict[str, Any]) -> bytes:
    """The RFC 8785 payload of ``fields`` whose values keep the forms described above."""
    return _dumps(fields, option=_SORT)


def wire(payload: bytes, signature: bytes) -> bytes:
    return b"MCB1." + _b64(payload).rstrip(b"=") + b"." + _b64(signature).rstrip(b"=")


def simulate_day(day: int, states: list[MeterState]) -> tuple[list[bytes], list[MeterState]]:
    """Day ``day`` of the instruments ``states``: their wire lines (in chain order per key)
    and their states after the day."""
    world = _installed.get("world")
    if world is None:  # pragma: no cover - install() runs first
        raise RuntimeError("metrocloud.sim.generate.install() was not called in this process")
    ctx = day_context(world.plan.seed, day, world.plan.start_ms)
    lines: list[bytes] = []
    # true increments of the day of the members of balance areas (an area's meter comes
    # after its members in ``states``)
    incs: dict[int, list[float]] = {}
    for state in states:
        plan = world.plan.instruments[state.index]
        if plan.area_meter:
            lines += _area_day(world, plan, state, ctx, incs)
        else:
            sink = incs if plan.area is not None else None
            lines += _instrument_day(world, plan, state, ctx, sink)
    return lines, states


def _area_day(
    world: _World,
    plan: InstrumentPlan,
    state: MeterState,
    ctx: DayContext,
    incs: dict[int, list[float]],
) -> list[bytes]:
    """The day of an area meter, from its members' true increments in ``incs``."""
    fleet = world.plan
    area = world.areas[plan.index]
    profile = PROFILES[plan.profile]
    parts = [incs.pop(i) for i in area.members]
    if profile.interval_ms:
        t_rel = list(range(0, DAY_MS, profile.interval_ms))
        total = [0.0] * len(t_rel)
        for part in parts:
            if part:
                total = [x + y for x, y in zip(total, part, strict=True)]
    else:
        # like the registers it balances, a station's gauges or a site's meter report when
        # something was taken: on an idle day, nothing (no flat register to mistake)
        total = [sum(sum(part) for part in parts)]
        if total[0] <= 0:
            return []
        t_rel = [DAY_MS - 30_000]
    rng = random.Random(f"metrocloud-sim/area/{fleet.seed}/{area.id}/{ctx.index}")
    gain = 1.0 + max(0.0, area.loss + rng.gauss(0.0, area.loss_noise))
    inc = [x * gain for x in total]
    d = _drifted(world, plan, ctx.start_ms, t_rel, inc)
    return _batches(_key(plan, fleet.seed), profile, plan, state, d, inc)


@dataclass(slots=True)
class _Day:
    """One instrument-day on its way from true to registered readings."""

    t_true: list[int]
    #: registered increments (drift and faults applied)
    reg: list[float]
    #: reported reading times (the device's clock)
    t_out: list[int]
    status: list[int]
    software: str
    #: index of the first increment after a counter reset
    reset: int | None = None


def _instrument_day(
    world: _World,
    plan: InstrumentPlan,
    state: MeterState,
    ctx: DayContext,
    sink: dict[int, list[float]] | None = None,
) -> list[bytes]:
    """One instrument's day; its true increments go to ``sink`` (a member of an area)."""
    fleet = world.plan
    profile = PROFILES[plan.profile]
    rng = random.Random(f"metrocloud-sim/day/{fleet.seed}/{plan.index}/{ctx.index}")
    t_rel, inc = profile.draw(rng, ctx, plan.params)
    if sink is not None:
        sink[plan.index] = inc
    day0 = ctx.start_ms
    faults = [f for f in plan.faults if f.overlaps(day0, day0 + DAY_MS)]
    if not t_rel:
        for f in faults:
            if f.kind == "counter_reset":
                state.reg = 0.0
            elif f.kind == "seal_broken" and day0 <= f.start_ms < day0 + DAY_MS:
                state.pending |= _status_bits(f)
        return []
    d = _drifted(world, plan, day0, t_rel, inc)
    for f in faults:
        _apply(f, d, state, day0, world.software[plan.profile][1])
    if state.pending:
        d.status[0] |= state.pending
        state.pending = 0
    return _batches(_key(plan, fleet.seed), profile, plan, state, d, inc)


def _drifted(
    world: _World, plan: InstrumentPlan, day0: int, t_rel: list[int], inc: list[float]
) -> _Day:
    """The day's registered increments before faults: the drift gain (the relative error
    grows linearly in time) on the true increments ``inc`` at ``t_rel`` after ``day0``."""
    g0 = 1.0 + plan.error_at(day0, world.plan.start_ms) / 100.0
    g1 = plan.drift_rate / 100.0 / YEAR_MS
    t_true = [day0 + x for x in t_rel]
    return _Day(
        t_true=t_true,
        reg=[x * (g0 + g1 * r) for x, r in zip(inc, t_rel, strict=True)],
        t_out=t_true,
        status=[0] * len(t_rel),
        software=world.software[plan.profile][0],
    )


def _apply(f: Fault, d: _Day, state: MeterState, day0: int, unapproved: str) -> None:
    """Apply fault ``f`` to the instrument-day ``d``."""
    n = len(d.t_true)
    kind = f.kind
    i0 = bisect_left(d.t_true, f.start_ms)
    i1 = n if f.end_ms is None else bisect_left(d.t_true, f.end_ms)
    reg = d.reg
    if kind == "under_registration":
        ratio = f.params["ratio"]
        reg[i0:] = [x * ratio for x in reg[i0:]]
    elif kind == "stuck_register":
        reg[i0:i1] = [0.0] * (i1 - i0)
    elif kind == "reverse_flow":
        reg[i0:i1] = [-abs(x) for x in reg[i0:i1]]
    elif kind == "counter_reset":
        d.reset = i0
    elif kind == "clock_drift":
        rate = f.params["seconds_per_day"] / 86_400.0
        s = f.start_ms
        d.t_out = [t + floor(rate * (t - s)) if t >= s else t for t in d.t_out]
    elif kind == "seal_broken":
        if day0 <= f.start_ms < day0 + DAY_MS:
            if i0 < n:
                d.status[i0] |= _status_bits(f)
            else:
                state.pending |= _status_bits(f)
    elif kind == "unapproved_software" and f.active(day0):
        d.software = unapproved


def _batches(
    key: PrivateKey,
    profile: Profile,
    plan: InstrumentPlan,
    state: MeterState,
    d: _Day,
    inc: list[float],
) -> list[bytes]:
    """Cumulate, show at the register's resolution, sign the day's batch(es)."""
    snapshot = profile.snapshot
    reg = d.reg
    if d.reset is None:
        cum = list(accumulate(reg, initial=state.reg))
        shown = cum[:-1] if snapshot else cum[1:]
    else:
        before = list(accumulate(reg[: d.reset], initial=state.reg))
        cum = list(accumulate(reg[d.reset :], initial=0.0))
        shown = before[:-1] + cum[:-1] if snapshot else before[1:] + cum[1:]
    true_cum = list(accumulate(inc, initial=state.true))
    true_last = true_cum[-2] if snapshot else true_cum[-1]
    state.reg = cum[-1]
    state.true = true_cum[-1]
    state.true_total += true_cum[-1] - true_cum[0]
    state.reg_total += sum(reg)
    scale = profile.scale
    fields: dict[str, Any] = {
        "counter": 0,
        "instrument": state.instrument,
        "key": key.key_id,
        "prev": "",
        "quantity": profile.quantity,
        "software": d.software,
        "status": d.status,
        "t": d.t_out,
        "unit": profile.unit,
        "v": 1,
        "value": [q // scale if not q % scale else q / scale for q in map(floor, shown)],
    }
    lines = [_sign(key, state, fields)]
    state.readings += len(d.t_out)
    if plan.has_reference:
        q = floor(true_last)
        fields["quantity"] = profile.reference_quantity
        fields["status"] = [0]
        fields["t"] = [d.t_out[-1] + 1]
        fields["value"] = [q // scale if not q % scale else q / scale]
        lines.append(_sign(key, state, fields))
        state.readings += 1
    return lines


def _status_bits(f: Fault) -> int:
    return _SEAL | (_TAMPER if f.params.get("tamper_detected") else 0)


def _sign(key: PrivateKey, state: MeterState, fields: dict[str, Any]) -> bytes:
    fields["counter"] = state.counter + 1
    fields["prev"] = state.prev
    payload = _dumps(fields, option=_SORT)
    state.counter += 1
    state.prev = _sha256(payload).hexdigest()
    state.batches += 1
    return wire(payload, key.sign(payload))


def initial_states(plan: FleetPlan, ids: list[str]) -> list[MeterState]:
    """Every instrument's state at the start (``ids[i]`` is instrument i's node id)."""
    return [
        MeterState(
            index=p.index,
            instrument=ids[p.index],
            reg=float(p.initial_units),
            true=float(p.initial_units),
        )
        for p in plan.instruments
    ]


def task(args: tuple[int, list[MeterState]]) -> tuple[list[bytes], list[MeterState]]:
    """:func:`simulate_day` for :meth:`multiprocessing.pool.Pool.apply_async`."""
    return simulate_day(*args)
