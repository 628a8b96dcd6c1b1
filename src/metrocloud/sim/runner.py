"""Run a simulation on a node: register the fleet, feed its days through the intake, label.

:func:`run_simulation` does, on the node it is given (new or in use):

1. admits the parties it needs (a notified body, a manufacturer per category, three
   operators, an authority), or finds them from an earlier run;
2. issues an EU-type examination certificate per category that approves the simulated
   software identification (and not its manipulated variant);
3. registers the instruments with their Ed25519 device keys, places them on the market and
   puts them into service (life-cycle events dated before the first simulated day);
4. simulates day after day in worker processes, each of which submits its wire lines
   through :func:`metrocloud.services.measurements.submit_batches` on the node (opened
   anew in the worker), the real intake with all its checks, as the utility's head-end
   system; seal events go into the registry as ``seal_broken`` / ``tamper_detected``
   life-cycle events of the day they happen;
5. moves what the intake accepted into the lake with the node's
   :class:`~metrocloud.ingest.LakeFlusher` (in the background, the simulation waits when it
   runs ahead by more than a few million readings), and flushes the rest at the end;
6. compacts the partitions of the closed days (``compact``, default on), as a node in
   operation would have done by then (:mod:`metrocloud.services._lake_maintenance`);
7. writes the labels and a JSON summary beside them.

Peak memory grows with the fleet, not with the days: the plan and one state per
instrument stay in memory; readings exist only for the instrument-days in flight.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from metrocloud.device import identify
from metrocloud.domain.certificates import ConformityModule
from metrocloud.domain.errors import Conflict, InvalidInput
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import SoftwareIdentification
from metrocloud.ingest import LakeFlusher, Outcome
from metrocloud.lake import Lake
from metrocloud.services import certificates as certs
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services import parties as pty
from metrocloud.services.common import Actor
from metrocloud.services.measurements import (
    compact_each,
    compactable,
    first_open_day,
    submit_batches,
)
from metrocloud.services.node import Node
from metrocloud.services.streaming import StreamMonitor
from metrocloud.sim.generate import (
    MeterState,
    device_key,
    initial_states,
    install,
    simulate_day,
)
from metrocloud.sim.labels import labels_table, write_labels
from metrocloud.sim.plan import KINDS, FleetPlan, InstrumentPlan, plan_fleet
from metrocloud.sim.profiles import DAY_MS, PROFILES, Profile
from metrocloud.store.schema import certificates, parties
from metrocloud.store.schema import instruments as instrument_rows

__all__ = ["SUMMARY_FORMAT", "TRANSPORT", "SimConfig", "SimResult", "run_simulation"]

SUMMARY_FORMAT = "metrocloud sim summary v1"
#: the transport recorded with the simulator's batches in the intake log
TRANSPORT = "sim"
#: the simulation waits while the lake lags the intake by more readings than this
_BACKLOG = 3_000_000

Progress = Callable[[str, int, int], None]
_K = TypeVar("_K")


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """What to simulate (the CLI's options, and knobs for tests)."""

    instruments: int
    days: int
    seed: int = 1
    #: first simulated day (UTC); default: ``days + 1`` days before today
    start: date | None = None
    #: labels file (.parquet or .jsonl); default DATA_DIR/sim/labels.parquet
    labels: Path | None = None
    reference_share: float = 0.25
    crossing_share: float = 0.05
    #: share of the instruments in balance areas (each with an area meter on top)
    balance_share: float = 0.75
    #: probability per instrument of each fault kind; None: the defaults
    rates: Mapping[str, float] | None = None
    #: restrict the fleet to these profiles (keys of PROFILES); None: the mix
    categories: Sequence[str] | None = None
    #: worker processes generating, signing and submitting; 0: all in this process
    workers: int = 2
    #: instruments per task; None: a quarter of the fleet per worker, 50 to 1000
    chunk: int | None = None
    #: compact the closed days' partitions at the end, as a node's maintenance would have
    compact: bool = True


@dataclass(frozen=True, kw_only=True)
class SimResult:
    node_id: str
    instruments: int
    days: int
    start: date
    categories: dict[str, int]
    faults: dict[str, int]
    readings_sent: int
    batches_sent: int
    readings_accepted: int
    batches_accepted: int
    duplicates: int
    quarantined: dict[str, int]
    flags: dict[str, int]
    lake_rows: int
    lake_bytes: int
    labels: Path
    summary: Path
    elapsed_s: float
    simulate_s: float
    peak_rss_mib: float
    workers_peak_rss_mib: float
    #: CPU seconds (user + system) of this process and of the worker processes
    cpu_s: float = 0.0
    workers_cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def readings_per_s(self) -> float:
        return self.readings_sent / self.simulate_s if self.simulate_s > 0 else 0.0


def _software(profile: Profile) -> tuple[SoftwareIdentification, SoftwareIdentification]:
    """(approved, manipulated) software identification of a simulated type."""
    name = f"SIM-{profile.code}-FW"
    approved = identify(name, "1.0.0", {"metering": f"metrocloud sim {profile.key} 1.0.0".encode()})
    modified = identify(
        name, "1.0.0-mod", {"metering": f"metrocloud sim {profile.key} 1.0.0 (modified)".encode()}
    )
    return approved, modified


def _party(node: Node, name: str, role: PartyRole) -> dict[str, Any]:
    """The party ``name`` of ``role`` (from an earlier run), else a newly admitted one."""
    with node.db.read() as conn:
        row = conn.execute(
            select(parties).where(parties.c.name == name, parties.c.role == role.value)
        ).first()
        used = set(conn.execute(select(parties.c.nb_number)).scalars())
    if row is not None:
        return pty.party_out(row)
    nb = None
    if role is PartyRole.NOTIFIED_BODY:
        nb = next((f"{n:04d}" for n in range(9990, 9000, -1) if f"{n:04d}" not in used), None)
        if nb is None:  # pragma: no cover - a node with a thousand notified bodies
            raise Conflict("no free notified body number 9001 to 9990 for the simulator")
    party, _ = pty.admit_party(node, None, name=name, role=role, nb_number=nb)
    return party


_OPERATOR_OF = {
    "electricity": "Stadtwerke Simstadt (simulated)",
    "gas": "Stadtwerke Simstadt (simulated)",
    "water": "Stadtwerke Simstadt (simulated)",
    "fuel": "SimTank Tankstellen GmbH (simulated)",
    "ev": "SimLade Ladepark GmbH (simulated)",
}
_MANUFACTURER_OF = {
    "electricity": "SimMeter Elektrozähler GmbH (simulated)",
    "gas": "SimGas Messtechnik AG (simulated)",
    "water": "SimAqua Meters BV (simulated)",
    "fuel": "SimFuel Dispensers GmbH (simulated)",
    "ev": "SimCharge Ladetechnik GmbH (simulated)",
}


@dataclass
class _Registry:
    """The parties, certificates and instruments of a run."""

    nb: dict[str, Any]
    authority: dict[str, Any]
    manufacturers: dict[str, dict[str, Any]]
    operators: dict[str, dict[str, Any]]
    certificates: dict[str, dict[str, Any]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)


def _parties(node: Node, profiles: Iterable[str]) -> _Registry:
    keys = sorted(set(profiles))
    return _Registry(
        nb=_party(node, "SimCert notified body (simulated)", PartyRole.NOTIFIED_BODY),
        authority=_party(node, "Eichamt Simland (simulated)", PartyRole.AUTHORITY),
        manufacturers={k: _party(node, _MANUFACTURER_OF[k], PartyRole.MANUFACTURER) for k in keys},
        operators={k: _party(node, _OPERATOR_OF[k], PartyRole.OPERATOR) for k in keys},
    )


def _certificates(node: Node, reg: _Registry, start: date) -> dict[str, tuple[str, str]]:
    """Issue (or find) each category's certificate; profile -> (approved, unapproved)
    software checksums."""
    software: dict[str, tuple[str, str]] = {}
    for key, man in reg.manufacturers.items():
        profile = PROFILES[key]
        approved, modified = _software(profile)
        number = f"SIM-{profile.code}-{reg.nb['nb_number']}"
        with node.db.read() as conn:
            row = conn.execute(select(certificates).where(certificates.c.number == number)).first()
        if row is not None:
            cert = certs.certificate_out(row)
        else:
            issued = start - timedelta(days=3 * 365)
            cert, _ = certs.issue_certificate(
                node,
                Actor.of_party(reg.nb),
                certs.CertificateDraft(
                    number=number,
                    holder_id=man["id"],
                    category=profile.category,
                    model=profile.model,
                    accuracy_class=profile.accuracy_class,
                    software=(approved,),
                    module=ConformityModule.B,
                    issued_on=issued,
                    valid_until=issued.replace(year=issued.year + 10),
                    rated_conditions={"temperature": "-25 °C .. +55 °C", "environment": "M1/E2"},
                ),
            )
        reg.certificates[key] = cert
        software[key] = (approved.checksum, modified.checksum)
    return software


def _register(node: Node, reg: _Registry, plan: FleetPlan, progress: Progress) -> None:
    """Register the instruments (device keys from the seed), place them on the market and
    put them into service."""
    n = len(plan.instruments)
    ids: list[str | None] = [None] * n
    key_ids = [""] * n
    limit = node.settings.max_batch
    by_profile: dict[str, list[int]] = {}
    for p in plan.instruments:
        by_profile.setdefault(p.profile, []).append(p.index)
    done = 0
    progress("register", 0, n)
    for key, indexes in by_profile.items():
        man = Actor.of_party(reg.manufacturers[key])
        for lo in range(0, len(indexes), limit):
            part = indexes[lo : lo + limit]
            drafts = []
            for i in part:
                p = plan.instruments[i]
                device = device_key(plan.seed, p.serial)
                key_ids[i] = device.key_id
                drafts.append(
                    inst.InstrumentDraft(
                        serial=p.serial,
                        certificate_id=reg.certificates[key]["id"],
                        region=p.region,
                        device_keys=(device.public_key.to_spki_b64(),),
                    )
                )
            refs, _ = inst.register_instruments(node, man, drafts)
            for i, ref in zip(part, refs, strict=True):
                ids[i] = ref["id"]
            done += len(part)
            progress("register", done, n)
    reg.ids = [i for i in ids if i is not None]
    reg.key_ids = key_ids
    placed = datetime.fromtimestamp(plan.start_ms / 1000, UTC) - timedelta(days=30)
    in_service = datetime.fromtimestamp(plan.start_ms / 1000, UTC) - timedelta(days=1)
    done = 0
    progress("in service", 0, n)
    for key, indexes in by_profile.items():
        man = Actor.of_party(reg.manufacturers[key])
        op = Actor.of_party(reg.operators[key])
        _record(
            node,
            man,
            [
                ev.EventDraft(
                    instrument_id=reg.ids[i], kind=EventKind.PLACED_ON_MARKET, occurred_at=placed
                )
                for i in indexes
            ],
        )
        _record(
            node,
            op,
            [
                ev.EventDraft(
                    instrument_id=reg.ids[i],
                    kind=EventKind.PUT_INTO_SERVICE,
                    occurred_at=in_service,
                    details=_service_details(plan.instruments[i]),
                )
                for i in indexes
            ],
        )
        done += len(indexes)
        progress("in service", done, n)


def _service_details(p: InstrumentPlan) -> dict[str, Any]:
    """The ``put_into_service`` event's details: the region and, in a balance area, the area
    (and, of its meter, the role)."""
    details: dict[str, Any] = {"region": p.region}
    if p.area is not None:
        details["balance_area"] = p.area
        details["balance_role"] = "area_meter" if p.area_meter else "member"
    return details


def _record(node: Node, actor: Actor, drafts: Sequence[ev.EventDraft]) -> int:
    limit = node.settings.max_batch
    for lo in range(0, len(drafts), limit):
        ev.record_events(node, actor, drafts[lo : lo + limit])
    return len(drafts)


def _seal_events(plan: FleetPlan, reg: _Registry, day: int) -> dict[str, list[ev.EventDraft]]:
    """The seal events of simulated day ``day``, by operator."""
    lo = plan.start_ms + day * DAY_MS
    hi = lo + DAY_MS
    out: dict[str, list[ev.EventDraft]] = {}
    for p in plan.instruments:
        for f in p.faults:
            if f.kind != "seal_broken" or not lo <= f.start_ms < hi:
                continue
            at = datetime.fromtimestamp(f.start_ms / 1000, UTC)
            drafts = out.setdefault(p.profile, [])
            drafts.append(
                ev.EventDraft(
                    instrument_id=reg.ids[p.index],
                    kind=EventKind.SEAL_BROKEN,
                    occurred_at=at,
                    details={"note": "seal found broken (simulated)"},
                )
            )
            if f.params.get("tamper_detected"):
                drafts.append(
                    ev.EventDraft(
                        instrument_id=reg.ids[p.index],
                        kind=EventKind.TAMPER_DETECTED,
                        occurred_at=at + timedelta(seconds=1),
                        details={"note": "cover opened (simulated)"},
                    )
                )
    return out


def _check_window(node: Node, plan: FleetPlan) -> None:
    """The readings must be in the intake's window: not in the future, not too old."""
    now_ms = int(node.now().timestamp() * 1000)
    lo, hi = plan.max_clock_offset_ms()
    s = node.settings
    last = plan.end_ms + hi
    if last > now_ms:
        raise InvalidInput(
            f"the simulated days must lie in the past: they end at {_iso(plan.end_ms)}"
            + (f" (device clocks up to {hi // 1000} s fast)" if hi else "")
            + f", the node's clock is at {_iso(now_ms)}; choose an earlier --start",
            rule="intake check 7 (implausible-time)",
        )
    oldest = now_ms - s.intake_max_age_days * DAY_MS + DAY_MS
    if plan.start_ms + lo < oldest:
        raise InvalidInput(
            f"the first simulated day {_iso(plan.start_ms)[:10]} is too old: the intake takes "
            f"readings of the last {s.intake_max_age_days} days (setting intake_max_age_days); "
            f"start on {_iso(oldest + DAY_MS)[:10]} or later",
            rule="intake check 7 (implausible-time)",
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _dir_bytes(root: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.stat(os.path.join(base, name)).st_size
    return total


@dataclass
class _Tally:
    """The intake's outcomes, counted (per task in a worker, summed in the run)."""

    batches_sent: int = 0
    readings_accepted: int = 0
    batches_accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    #: instrument index -> quarantined batches
    per_instrument: dict[int, int] = field(default_factory=dict)

    def count(self, outcomes: Iterable[Outcome], index_of: Mapping[str, int]) -> None:
        for o in outcomes:
            self.batches_sent += 1
            if o.status == "accepted":
                self.batches_accepted += 1
                self.readings_accepted += o.readings
            elif o.status == "duplicate":
                self.duplicates += 1
            else:
                reason = o.reason or "unknown"
                self.quarantined[reason] = self.quarantined.get(reason, 0) + 1
                i = index_of.get(o.instrument or "")
                if i is not None:
                    self.per_instrument[i] = self.per_instrument.get(i, 0) + 1
            for flag in o.flags:
                self.flags[flag] = self.flags.get(flag, 0) + 1

    def add(self, other: _Tally) -> None:
        self.batches_sent += other.batches_sent
        self.readings_accepted += other.readings_accepted
        self.batches_accepted += other.batches_accepted
        self.duplicates += other.duplicates
        _merge(self.quarantined, other.quarantined)
        _merge(self.flags, other.flags)
        _merge(self.per_instrument, other.per_instrument)


def _merge(mine: dict[_K, int], theirs: Mapping[_K, int]) -> None:
    for k, v in theirs.items():
        mine[k] = mine.get(k, 0) + v


def run_simulation(node: Node, config: SimConfig, *, progress: Progress | None = None) -> SimResult:
    """Simulate ``config`` on ``node``; see the module docstring."""
    step = progress or (lambda _what, _done, _total: None)
    began = time.monotonic()
    cpu0 = (_cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN))
    data_dir = node.settings.data_dir
    labels_path = config.labels or data_dir / "sim" / "labels.parquet"
    if labels_path.suffix.lower() not in (".parquet", ".jsonl"):
        raise InvalidInput(
            f"labels file {labels_path} must end in .parquet or .jsonl, "
            f"found {labels_path.suffix or 'none'}"
        )
    if labels_path.exists():
        raise Conflict(
            f"labels file {labels_path} exists already (a simulation ran here); pass another "
            "--labels or use another --data-dir"
        )
    summary_path = labels_path.with_name(labels_path.stem + ".summary.json")
    if config.workers < 0:
        raise InvalidInput(f"workers must be 0 or more, got {config.workers}")
    start = config.start or (node.now().date() - timedelta(days=config.days + 1))
    start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    plan = plan_fleet(
        seed=config.seed,
        instruments=config.instruments,
        days=config.days,
        start_ms=start_ms,
        country=node.country,
        reference_share=config.reference_share,
        crossing_share=config.crossing_share,
        balance_share=config.balance_share,
        rates=config.rates,
        categories=config.categories,
    )
    _check_window(node, plan)
    with node.db.read() as conn:
        taken = conn.execute(
            select(instrument_rows.c.id).where(
                instrument_rows.c.serial == plan.instruments[0].serial
            )
        ).first()
    if taken is not None:
        raise Conflict(
            f"the node holds simulated instruments of seed {config.seed} already (serial "
            f"{plan.instruments[0].serial}); use another --seed or --data-dir"
        )
    lake = Lake.open(node.settings.lake_path(), create=True)  # Conflict: another writer
    # streaming monitoring sees the simulated readings as a node's flusher hands them over
    flusher = LakeFlusher(node.db, lake, on_committed=StreamMonitor(node.db))
    try:
        step("setup", 0, 1)
        reg = _parties(node, (p.profile for p in plan.instruments))
        software = _certificates(node, reg, start)
        step("setup", 1, 1)
        _register(node, reg, plan, step)
        head_end = Actor.of_party(reg.operators[sorted(reg.operators)[0]])
        t0 = time.monotonic()
        states, tally = _simulate(node, plan, reg, software, head_end, config, flusher, step)
        step("lake", 0, 1)
        flusher.stop()
        step("lake", 1, 1)
        simulate_s = time.monotonic() - t0  # first day simulated to last reading in the lake
        _compact(lake, node, config, step)
        stats = lake.stats()
    finally:
        flusher.stop()
        lake.close()
    table = labels_table(plan, states, reg.key_ids, tally.per_instrument)
    write_labels(table, labels_path)
    categories: dict[str, int] = {}
    for p in plan.instruments[: plan.fleet_size]:
        c = PROFILES[p.profile].category.value
        categories[c] = categories.get(c, 0) + 1
    faults = {k: sum(1 for p in plan.instruments for f in p.faults if f.kind == k) for k in KINDS}
    result = SimResult(
        node_id=node.node_id,
        instruments=plan.fleet_size,
        days=plan.days,
        start=start,
        categories=categories,
        faults=faults,
        readings_sent=sum(s.readings for s in states),
        batches_sent=tally.batches_sent,
        readings_accepted=tally.readings_accepted,
        batches_accepted=tally.batches_accepted,
        duplicates=tally.duplicates,
        quarantined=dict(sorted(tally.quarantined.items())),
        flags=dict(sorted(tally.flags.items())),
        lake_rows=int(stats["rows"]),
        lake_bytes=_dir_bytes(node.settings.lake_path()),
        labels=labels_path,
        summary=summary_path,
        elapsed_s=time.monotonic() - began,
        simulate_s=simulate_s,
        peak_rss_mib=_rss_mib(resource.RUSAGE_SELF),
        workers_peak_rss_mib=_rss_mib(resource.RUSAGE_CHILDREN),
        cpu_s=_cpu_s(resource.RUSAGE_SELF) - cpu0[0],
        workers_cpu_s=_cpu_s(resource.RUSAGE_CHILDREN) - cpu0[1],
        extra={
            "crossing": sum(1 for p in plan.instruments if p.crossing_ms is not None),
            "balance_areas": len(plan.areas),
            "in_balance_areas": sum(len(a.members) for a in plan.areas),
        },
    )
    _write_summary(result, plan, config, software)
    return result


def _compact(lake: Lake, node: Node, config: SimConfig, step: Progress) -> None:
    """The closed days' partitions compacted, one at a time (a step per partition), unless
    ``config.compact`` is off."""
    if not config.compact:
        return
    todo = compactable(lake.manifest, before=first_open_day(node.now()))
    step("compact", 0, len(todo))
    compact_each(lake, todo, progress=lambda done, total: step("compact", done, total))


def _chunk(config: SimConfig) -> int:
    if config.chunk is not None:
        if config.chunk < 1:
            raise InvalidInput(f"chunk must be at least 1, got {config.chunk}")
        return config.chunk
    per = math.ceil(config.instruments / (4 * max(1, config.workers)))
    return max(50, min(1000, per))


def _chunks(plan: FleetPlan, states: list[MeterState], size: int) -> list[list[MeterState]]:
    """``states`` in tasks of about ``size``: each balance area whole in one task, its
    meter after its members (the meter's day is their day summed), then the rest."""
    units = [[*a.members, a.meter] for a in plan.areas]
    placed = {i for unit in units for i in unit}
    units += [[s.index] for s in states if s.index not in placed]
    chunks: list[list[MeterState]] = [[]]
    for unit in units:
        if chunks[-1] and len(chunks[-1]) + len(unit) > size:
            chunks.append([])
        chunks[-1] += [states[i] for i in unit]
    return [c for c in chunks if c]


#: this worker's node and head-end actor (set by :func:`_start_worker`)
_worker: dict[str, Any] = {}


def _start_worker(
    plan: FleetPlan, software: dict[str, tuple[str, str]], settings: Any, head_end: Actor
) -> None:
    """Pool initializer: the plan, and the node opened anew in this process (its own
    database connections and intake)."""
    install(plan, software)
    _worker["node"] = Node.open(settings, create=False)
    _worker["head_end"] = head_end


def _feed(
    node: Node, head_end: Actor, day: int, states: list[MeterState]
) -> tuple[list[MeterState], _Tally]:
    """Simulate ``day`` of ``states`` and submit its lines through the node's intake."""
    lines, states = simulate_day(day, states)
    tally = _Tally()
    index_of = {s.instrument: s.index for s in states}
    step = node.settings.intake_max_lines
    for lo in range(0, len(lines), step):
        tally.count(submit_batches(node, head_end, lines[lo : lo + step], TRANSPORT), index_of)
    return states, tally


def _feed_task(args: tuple[int, list[MeterState]]) -> tuple[list[MeterState], _Tally]:
    return _feed(_worker["node"], _worker["head_end"], *args)


def _simulate(
    node: Node,
    plan: FleetPlan,
    reg: _Registry,
    software: dict[str, tuple[str, str]],
    head_end: Actor,
    config: SimConfig,
    flusher: LakeFlusher,
    step: Progress,
) -> tuple[list[MeterState], _Tally]:
    """Feed every day through the intake; the states after the last day, and the tally.

    With workers, each worker process simulates a chunk's day AND submits it through its own
    intake on the node's database (as ``serve --workers N`` does): generation, signing and
    the intake's checks all run in parallel; SQLite serializes the write transactions. A
    chunk's next day is dispatched only when its current day came back stored, so each key's
    chain arrives in order. This process runs the lake flusher and records seal events.
    """
    states = initial_states(plan, reg.ids)
    chunks = _chunks(plan, states, _chunk(config))
    tally = _Tally()
    total = len(states) * plan.days
    done = 0
    step("simulate", 0, total)

    def finish_day(day: int) -> None:
        for key, drafts in _seal_events(plan, reg, day).items():
            _record(node, Actor.of_party(reg.operators[key]), drafts)
        while tally.readings_accepted - flusher.readings_flushed > _BACKLOG:
            time.sleep(0.05)

    if config.workers == 0:
        install(plan, software)
        flusher.start()
        for day in range(plan.days):
            for c, chunk in enumerate(chunks):
                chunks[c], part = _feed(node, head_end, day, chunk)
                tally.add(part)
                done += len(chunk)
                step("simulate", done, total)
            finish_day(day)
    else:
        # forked before this run starts threads of its own (the flusher); the workers
        # open their own database connections (see docs/sim.md)
        context = multiprocessing.get_context("fork")
        init = (plan, software, node.settings, head_end)
        with context.Pool(config.workers, initializer=_start_worker, initargs=init) as pool:
            flusher.start()
            pending: deque[tuple[int, int, AsyncResult[tuple[list[MeterState], _Tally]]]]
            pending = deque(
                (0, c, pool.apply_async(_feed_task, ((0, chunk),)))
                for c, chunk in enumerate(chunks)
            )
            while pending:
                day, c, result = pending.popleft()
                chunks[c], part = result.get()
                if day + 1 < plan.days:
                    pending.append(
                        (day + 1, c, pool.apply_async(_feed_task, ((day + 1, chunks[c]),)))
                    )
                tally.add(part)
                done += len(chunks[c])
                step("simulate", done, total)
                if c == len(chunks) - 1:
                    finish_day(day)
            pool.close()
            pool.join()
    out = [state for chunk in chunks for state in chunk]
    return sorted(out, key=lambda s: s.index), tally


def _write_summary(
    result: SimResult, plan: FleetPlan, config: SimConfig, software: Mapping[str, tuple[str, str]]
) -> None:
    body = {
        "format": SUMMARY_FORMAT,
        "node": result.node_id,
        "seed": plan.seed,
        "instruments": result.instruments,
        "days": result.days,
        "start": _iso(plan.start_ms),
        "end": _iso(plan.end_ms),
        "reference_share": config.reference_share,
        "balance_share": config.balance_share,
        "balance_areas": result.extra["balance_areas"],
        "instruments_in_balance_areas": result.extra["in_balance_areas"],
        "categories": result.categories,
        "faults": result.faults,
        "mpe_crossing_instruments": result.extra["crossing"],
        "software": {
            PROFILES[k].category.value: {"approved": ok, "unapproved": bad}
            for k, (ok, bad) in sorted(software.items())
        },
        "readings_sent": result.readings_sent,
        "batches_sent": result.batches_sent,
        "readings_accepted": result.readings_accepted,
        "batches_accepted": result.batches_accepted,
        "duplicates": result.duplicates,
        "quarantined": result.quarantined,
        "flags": result.flags,
        "lake": {"rows": result.lake_rows, "bytes": result.lake_bytes},
        "labels": str(result.labels),
        "elapsed_s": round(result.elapsed_s, 3),
        "simulate_s": round(result.simulate_s, 3),
        "readings_per_s": round(result.readings_per_s, 1),
        "peak_rss_mib": round(result.peak_rss_mib, 1),
        "workers_peak_rss_mib": round(result.workers_peak_rss_mib, 1),
        "cpu_s": round(result.cpu_s, 1),
        "workers_cpu_s": round(result.workers_cpu_s, 1),
    }
    path = result.summary
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
