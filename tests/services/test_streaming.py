"""Streaming monitoring (services/streaming.py): alerts as the lake flusher commits segments.

- on a simulated fleet, whose flusher hands every segment to the node's monitor, streaming
  mode finds what batch mode finds for the kinds it decides (same instruments, kinds,
  severities, first evidence and numbers);
- a segment observed twice (the flusher rewrites it after a crash) or a transaction that
  failed half-way changes nothing twice; a restart continues from the stored state;
- for random register sequences cut at random into segments, streaming finds exactly the
  anomalies one pass over the whole sequence finds (hypothesis);
- the flusher's hook: called once per committed segment, in order, again after a crash
  before the segment was finished; a failing observer loses no reading;
- the API answers what the caller may read; the CLI prints what the service answers.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from metrocloud.cli import app as cli_app
from metrocloud.cli import out as cli_out
from metrocloud.device import StatusFlag
from metrocloud.ingest import Intake, IntakeLimits, LakeFlusher
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services import instruments as inst
from metrocloud.services import streaming as streaming_module
from metrocloud.services.monitoring import Alert, detect
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.services.streaming import (
    STREAM_KINDS,
    StreamAlert,
    StreamMonitor,
    list_stream_alerts,
    stream_alert_json,
)
from metrocloud.sim import SimConfig, run_simulation
from metrocloud.store.database import Database
from metrocloud.store.schema import stream_alerts, stream_segments, stream_state
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey
from tests.conftest import Member, World, software
from tests.ingest.test_intake import NOW, Meter

DAYS = 8
START = datetime.now(UTC).date() - timedelta(days=DAYS + 2)
T0 = datetime(2026, 3, 2, tzinfo=UTC)
QTY = "1-0:1.8.0"
_SCHEMA = pa.schema(
    [
        ("instrument", pa.string()),
        ("category", pa.string()),
        ("t", pa.timestamp("ms", tz="UTC")),
        ("quantity", pa.string()),
        ("value", pa.float64()),
        ("status", pa.int32()),
    ]
)

Reading = tuple[str, str, datetime, str, float, int]  # instrument, category, t, qty, value, status


def segment(readings: list[Reading]) -> pa.Table:
    cols = list(zip(*readings, strict=True)) if readings else [[] for _ in _SCHEMA]
    return pa.table([list(c) for c in cols], schema=_SCHEMA)


def meter(
    instrument: str,
    values: list[float],
    *,
    start: datetime = T0,
    minutes: int = 15,
    category: str = "MI-003",
    status: dict[int, int] | None = None,
) -> list[Reading]:
    return [
        (instrument, category, start + timedelta(minutes=minutes * k), QTY, v,
         (status or {}).get(k, 0))
        for k, v in enumerate(values)
    ]  # fmt: skip


# -- (1) a simulated fleet: streaming agrees with batch ---------------------------------------


@dataclass
class Fleet:
    root: Path
    node: Node
    batch: list[Alert]
    stream: list[StreamAlert]


def simulate_fleet(root: Path) -> Fleet:
    """40 simulated instruments over eight days, their batch alerts and streaming alerts
    (also the setup of tests/services/test_streaming_ops.py)."""
    node = Node.open(Settings(data_dir=root, country="DE"))
    rates = {"counter_reset": 0.2, "reverse_flow": 0.2, "seal_broken": 0.2,
             "unapproved_software": 0.1, "clock_drift": 0.05}  # fmt: skip
    config = SimConfig(instruments=40, days=DAYS, seed=5, start=START, workers=0, rates=rates)
    run_simulation(node, config)  # its flusher hands each segment to a StreamMonitor
    with DuckDBEngine(Lake.open(node.settings.lake_path()), threads=1) as engine:
        batch = detect(node, engine)
    return Fleet(root, node, batch, list_stream_alerts(node))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = simulate_fleet(tmp_path_factory.mktemp("streaming"))
    yield f
    f.node.db.dispose()


def _key(a: Alert | StreamAlert) -> tuple[str, str, str]:
    return a.instrument, a.kind, a.severity


def test_streaming_finds_what_batch_finds_on_a_simulated_fleet(fleet: Fleet) -> None:
    counters = ("counter_reset", "reverse_flow", "gap")
    batch = {(a.instrument, a.kind): a for a in fleet.batch if a.kind in counters}
    stream = {(a.instrument, a.kind): a for a in fleet.stream if a.kind in counters}
    # the simulator loses no reading, so gaps are left to the tests below
    assert {a.kind for a in batch.values()} >= {"counter_reset", "reverse_flow"}
    assert sorted(stream) == sorted(batch)
    for key, b in batch.items():
        s = stream[key]
        assert (_key(s), s.at) == (_key(b), b.at), key
        want = dict(b.evidence)
        got = dict(s.evidence)
        if "total_decrease" in want:
            assert got.pop("total_decrease") == pytest.approx(want.pop("total_decrease"))
        assert got == want, key
        assert s.last_at >= s.at and s.count == b.evidence["count"]


def test_status_bits_raise_the_seal_alerts_batch_takes_from_events(fleet: Fleet) -> None:
    seals = ("seal_broken", "tamper_detected")
    batch = {(a.instrument, a.kind): a for a in fleet.batch if a.kind in seals}
    stream = {(a.instrument, a.kind): a for a in fleet.stream if a.kind in seals}
    assert {k for _, k in batch} == set(seals)
    assert sorted(stream) == sorted(batch)
    for key, b in batch.items():
        s = stream[key]
        assert _key(s) == _key(b)
        # the device reports the event on its next reading: at or after it, within a day
        assert timedelta(0) <= s.at - b.at.replace(microsecond=0) < timedelta(days=1), key
        assert s.evidence["source"] == "reading status"
        assert s.evidence["status"] & int(StatusFlag.SEAL_BROKEN)


def test_streaming_raises_only_its_kinds(fleet: Fleet) -> None:
    assert {a.kind for a in fleet.stream} <= set(STREAM_KINDS)
    with fleet.node.db.read() as conn:
        observed = conn.execute(select(func.count(), func.sum(stream_segments.c.readings))).one()
        late = conn.execute(select(func.sum(stream_segments.c.late))).scalar()
    with Lake.open(fleet.node.settings.lake_path()) as lake:
        stats = lake.stats()
    assert observed == (stats["segments"], stats["rows"]) and late == 0


def _lake_segments(root: Path) -> list[tuple[str, pa.Table]]:
    """The segments of a lake as the flusher handed them over (in commit order)."""
    lake = Lake.open(root)
    try:
        files = lake.manifest.files()
        ids = sorted(
            {f.segment for f in files if f.segment}, key=lambda s: int(s.split("-")[1].lstrip("r"))
        )
        out = []
        for sid in ids:
            parts = []
            for f in (f for f in files if f.segment == sid):
                part = pq.read_table(root / f.path)
                part = part.append_column("category", pa.array([f.category] * part.num_rows))
                parts.append(part.select(_SCHEMA.names))
            out.append((sid, pa.concat_tables(parts)))
        return out
    finally:
        lake.close()


# -- (2) a segment observed twice, a transaction that failed --------------------------------


def _rows(db: Database) -> tuple[list[Any], list[Any]]:
    with db.read() as conn:
        alerts = conn.execute(select(stream_alerts).order_by("instrument", "kind")).all()
        state = conn.execute(select(stream_state).order_by("instrument", "quantity")).all()
    return [tuple(r) for r in alerts], [tuple(r) for r in state]


def test_segments_replayed_after_a_crash_raise_nothing_twice(fleet: Fleet) -> None:
    before = _rows(fleet.node.db)
    segments = _lake_segments(fleet.node.settings.lake_path())
    assert segments
    monitor = StreamMonitor(fleet.node.db)
    for sid, table in segments:
        seen = monitor.observe(sid, table)
        assert seen.repeated and not seen.raised
    assert _rows(fleet.node.db) == before


def test_the_lake_cut_into_days_gives_the_same_alerts_on_a_fresh_database(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The node saw few, large segments; cut per day, each day's segment continues from the
    state the day before left (the readings of a day in any order)."""
    whole = pa.concat_tables(t for _, t in _lake_segments(fleet.node.settings.lake_path()))
    days = whole["t"].cast(pa.date32())
    db = _database(tmp_path)
    monitor = StreamMonitor(db)
    for day in sorted(set(days.to_pylist())):
        part = whole.filter(pa.compute.equal(days, pa.scalar(day, pa.date32())))
        monitor.observe(f"day-{day}", part.take(pa.array(range(part.num_rows - 1, -1, -1))))
    again = [streaming_module._alert(r._asdict()) for r in _alert_rows(db)]
    db.dispose()
    assert len(again) == len(fleet.stream) >= 3
    for a, b in zip(again, fleet.stream, strict=True):
        assert (a.instrument, a.kind, a.severity, a.at, a.last_at, a.count) == (
            b.instrument, b.kind, b.severity, b.at, b.last_at, b.count
        )  # fmt: skip
        assert dict(a.evidence) == pytest.approx(dict(b.evidence))


def _alert_rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(stream_alerts).order_by("instrument", "kind")).all())


def _database(tmp_path: Path) -> Database:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{tmp_path / f'stream-{uuid.uuid4().hex}.db'}")
    db.migrate()
    return db


def test_a_failed_transaction_leaves_nothing_and_the_retry_counts_once(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = segment(meter("I-1", [10, 11, 12, 5]))  # a reverse flow inside
    second = segment(meter("I-1", [6, 7, 1], start=T0 + timedelta(hours=1)))  # 7 -> 1: reverse
    monitor = StreamMonitor(node.db)
    monitor.observe("s1", first)

    def killed(*_: Any, **__: Any) -> None:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(streaming_module, "save_segment", killed)
    before = _rows(node.db)
    with pytest.raises(RuntimeError, match="killed"):
        monitor.observe("s2", second)
    assert _rows(node.db) == before  # state and alerts rolled back with the segment
    monkeypatch.undo()
    assert monitor.observe("s2", second).updated == 1
    assert monitor.observe("s2", second).repeated
    assert monitor.observe("s1", first).repeated
    (alert,) = list_stream_alerts(node)
    assert (alert.kind, alert.count, alert.evidence["total_decrease"]) == ("reverse_flow", 2, 13.0)
    assert alert.at == T0 + timedelta(minutes=45) and alert.segment == "s1"
    assert alert.last_at == T0 + timedelta(hours=1, minutes=30)


# -- (3) a restart continues from the stored state ------------------------------------------


def test_a_regression_across_a_restart_is_found(node: Node) -> None:
    db = Database(node.settings.database_url(), schema=node.settings.db_schema)
    StreamMonitor(db).observe("before", segment(meter("I-2", [100, 200, 300])))
    db.dispose()  # the process stops
    db = Database(node.settings.database_url(), schema=node.settings.db_schema)
    seen = StreamMonitor(db).observe(
        "after", segment(meter("I-2", [20, 25], start=T0 + timedelta(minutes=45)))
    )
    db.dispose()
    (alert,) = seen.raised
    assert (alert.kind, alert.severity, alert.at) == ("counter_reset", "critical",
                                                      T0 + timedelta(minutes=45))  # fmt: skip
    assert alert.evidence == {"count": 1, "quantity": QTY, "previous_value": 300.0,
                              "value": 20.0, "total_decrease": 280.0}  # fmt: skip


def test_late_readings_are_counted_and_not_compared(node: Node) -> None:
    monitor = StreamMonitor(node.db)
    monitor.observe("a", segment(meter("I-3", [1, 2, 3, 4])))
    late = meter("I-3", [0.5, 9], start=T0 + timedelta(minutes=30), minutes=30)
    seen = monitor.observe("b", segment(late))
    assert (seen.late, seen.raised) == (1, ())  # 0.5 at 00:30 is not newer than 00:45


def test_gaps_follow_the_categorys_interval_and_flags_raise_seal_alerts(node: Node) -> None:
    monitor = StreamMonitor(node.db)
    seal = int(StatusFlag.SEAL_BROKEN | StatusFlag.TAMPER_DETECTED)
    readings = [
        *meter("G-1", [1, 2, 3]),  # MI-003: 15 min nominal, a gap beyond 30 min
        *meter("G-1", [4, 5], start=T0 + timedelta(minutes=61)),
        *meter("F-1", [1, 2], category="MI-005", minutes=600),  # fuel: no nominal interval
        *meter("S-1", [1, 2, 3], status={1: seal, 2: int(StatusFlag.SEAL_BROKEN)}),
        ("S-1", "MI-003", T0, QTY + "*ref", 0.0, 0),  # a reference reading: not a register
    ]
    seen = monitor.observe("g", segment(readings))
    got = {(a.instrument, a.kind): a for a in seen.raised}
    assert sorted(got) == [("G-1", "gap"), ("S-1", "seal_broken"), ("S-1", "tamper_detected")]
    gap = got[("G-1", "gap")]
    assert gap.at == T0 + timedelta(minutes=30) and gap.severity == "warning"
    assert gap.evidence == {"count": 1, "quantity": QTY, "longest_s": 1860.0,
                            "nominal_interval_s": 900.0}  # fmt: skip
    assert got[("S-1", "seal_broken")].count == 2
    assert got[("S-1", "tamper_detected")].at == T0 + timedelta(minutes=15)


# -- (4) any cut into segments finds what one pass finds ---------------------------------------


def _one_pass(regs: dict[str, list[tuple[int, float]]]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Each reading against the previous one of its register (batch mode's pairing), folded
    into one alert per (instrument, kind) as batch mode reports it."""
    found: dict[tuple[str, str], list[tuple[int, float, float, int]]] = {}
    for ins, series in regs.items():
        for (t0, v0), (t1, v1) in pairwise(series):
            if v1 < v0:
                kind = "counter_reset" if v0 > 0 and v1 <= 0.1 * v0 else "reverse_flow"
                found.setdefault((ins, kind), []).append((t1, v0, v1, t1))
            if t1 - t0 > 30 * 60_000:
                found.setdefault((ins, "gap"), []).append((t0, v0, v1, t1 - t0))
    out = {}
    for key, rows in found.items():
        first = min(rows)
        if key[1] == "gap":
            out[key] = (first[0], len(rows), max(r[3] for r in rows) / 1000.0)
        else:
            out[key] = (first[0], len(rows), first[1], first[2], sum(r[1] - r[2] for r in rows))
    return out


@st.composite
def cut_registers(draw: st.DrawFn) -> tuple[dict[str, list[tuple[int, float]]], list[int]]:
    regs: dict[str, list[tuple[int, float]]] = {}
    for name in ("A", "B", "C")[: draw(st.integers(1, 3))]:
        n = draw(st.integers(1, 25))
        steps = draw(st.lists(st.sampled_from([900, 900, 900, 2700, 7200]), min_size=n, max_size=n))
        values = draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, 5.0, 40.0, 41.0, 100.0]),
                               min_size=n, max_size=n))  # fmt: skip
        t = 0
        regs[name] = []
        for s, v in zip(steps, values, strict=True):
            t += s * 1000
            regs[name].append((t, v))
    total = sum(len(s) for s in regs.values())
    cuts = sorted(draw(st.sets(st.integers(1, max(1, total - 1)), max_size=6)))
    return regs, cuts


_PROPERTY_DB: list[Database] = []


@settings(max_examples=60)
@given(case=cut_registers())
def test_any_cut_into_segments_finds_what_one_pass_finds(
    case: tuple[dict[str, list[tuple[int, float]]], list[int]], tmp_path_factory: Any
) -> None:
    regs, cuts = case
    if not _PROPERTY_DB:  # one database for all examples: each uses its own instruments
        _PROPERTY_DB.append(_database(tmp_path_factory.mktemp("property")))
    db = _PROPERTY_DB[0]
    run = uuid.uuid4().hex[:8]
    # the readings in arrival order (time order across registers), cut at random
    arrival = sorted((t, name, v) for name, series in regs.items() for t, v in series)
    monitor = StreamMonitor(db)
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(arrival)], strict=True)):
        part = [
            (f"{run}-{name}", "MI-003", T0 + timedelta(milliseconds=t), QTY, v, 0)
            for t, name, v in reversed(arrival[lo:hi])  # any order inside a segment
        ]
        monitor.observe(f"{run}-{k}", segment(part))
    with db.read() as conn:
        rows = conn.execute(
            select(stream_alerts).where(stream_alerts.c.instrument.like(f"{run}-%"))
        ).all()
    got = {}
    for r in rows:
        a = streaming_module._alert(r._asdict())
        at = round((a.at - T0).total_seconds() * 1000)
        key = (a.instrument.split("-", 1)[1], a.kind)
        if a.kind == "gap":
            got[key] = (at, a.count, a.evidence["longest_s"])
        else:
            ev = a.evidence
            got[key] = (at, a.count, ev["previous_value"], ev["value"], ev["total_decrease"])
    want = _one_pass(regs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key][:-1] == value[:-1] and math.isclose(got[key][-1], value[-1]), key


# -- the flusher's hook ------------------------------------------------------------------------


class _Killed(BaseException):
    """The process dies (not an error the flusher could catch)."""


@pytest.fixture
def intake_meter(world: World) -> tuple[World, Intake, Meter]:
    cert = world.certificate(world.nb1, world.man1)
    key = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
    draft = inst.InstrumentDraft(serial="S-1", certificate_id=cert["id"], region="DE21",
                                 device_keys=(key.public_key.to_spki_b64(),))  # fmt: skip
    refs, _ = inst.register_instruments(world.node, world.man1.actor, [draft])
    intake = Intake(world.node.db, clock=lambda: NOW, limits=IntakeLimits(cache_seconds=0))
    return world, intake, Meter(refs[0]["id"], key, software("1.0.0").checksum)


def test_the_hook_sees_each_segment_once_even_after_a_crash_before_it_was_finished(
    intake_meter: tuple[World, Intake, Meter], tmp_path: Path
) -> None:
    world, intake, m = intake_meter
    for _ in range(5):  # a round each; each 100..103: 4 regressions
        intake.submit([m.batch().wire()], "http")
    monitor = StreamMonitor(world.node.db)
    calls: list[str] = []

    def dies_once(segment_id: str, table: pa.Table) -> None:
        calls.append(segment_id)
        monitor.observe(segment_id, table)
        if len(calls) == 2:
            raise _Killed  # after the monitor committed, before the rounds went

    lake = Lake.open(tmp_path / "lake", create=True)
    with pytest.raises(_Killed):
        LakeFlusher(world.node.db, lake, max_batches=2, on_committed=dies_once).flush_all()
    restarted = LakeFlusher(world.node.db, lake, max_batches=2, on_committed=dies_once)
    assert restarted.flush_all() == 12  # the pending segment again (a no-op in the lake), the rest
    lake.close()
    assert calls == ["intake-r1-2", "intake-r3-4", "intake-r3-4", "intake-r5-5"]
    (alert,) = list_stream_alerts(world.node)
    assert (alert.instrument, alert.kind, alert.count) == (m.instrument, "reverse_flow", 4)
    assert alert.evidence["total_decrease"] == 12.0 and restarted.hook_failures == 0


def test_a_failing_observer_loses_no_reading(
    intake_meter: tuple[World, Intake, Meter], tmp_path: Path
) -> None:
    world, intake, m = intake_meter
    for _ in range(3):  # three rounds: two segments of at most two batches
        intake.submit([m.batch().wire()], "http")

    def broken(segment_id: str, table: pa.Table) -> None:
        raise ValueError("observer bug")

    lake = Lake.open(tmp_path / "lake", create=True)
    flusher = LakeFlusher(world.node.db, lake, max_batches=2, on_committed=broken)
    assert flusher.flush_all() == 12 and flusher.hook_failures == 2
    assert flusher.flush_once() == 0  # nothing left pending: not flushed again
    assert lake.stats()["rows"] == 12
    lake.close()


# -- (5) the API and the CLI -------------------------------------------------------------------

URL = "/api/v1/monitoring/stream-alerts"


@dataclass
class Sides:
    a: list[str]  # man1's instruments (nb1's certificate)
    b: list[str]  # man2's (nb2's)


@pytest.fixture
def sides(world: World) -> Sides:
    a = [r["id"] for r in world.instruments(world.man1, world.certificate(world.nb1, world.man1),
                                            2, prefix="A")]  # fmt: skip
    b = [r["id"] for r in world.instruments(world.man2, world.certificate(world.nb2, world.man2),
                                            2, prefix="B")]  # fmt: skip
    readings = [r for i in (a[0], b[0]) for r in meter(i, [50, 60, 1, 2])]  # 60 -> 1: a reset
    readings += meter(b[1], [50, 60, 1, 2], status={3: int(StatusFlag.SEAL_BROKEN)})
    StreamMonitor(world.node.db).observe("api", segment(readings))
    return Sides(a, b)


def _get(client: TestClient, who: Member, **params: Any) -> dict[str, Any]:
    r = client.get(URL, params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _items(client: TestClient, who: Member, **params: Any) -> list[tuple[str, str]]:
    return [(x["instrument"], x["kind"]) for x in _get(client, who, **params)["items"]]


def test_the_route_answers_what_the_caller_may_read(
    world: World, client: TestClient, sides: Sides
) -> None:
    everything = sorted([(sides.a[0], "counter_reset"), (sides.b[0], "counter_reset"),
                         (sides.b[1], "counter_reset"), (sides.b[1], "seal_broken")])  # fmt: skip
    assert _items(client, world.auth1) == everything
    assert _items(client, world.man1) == [(sides.a[0], "counter_reset")]
    assert _items(client, world.nb1) == [(sides.a[0], "counter_reset")]  # its certificate
    assert _items(client, world.man2) == everything[1:]
    assert _items(client, world.man2, kind="seal_broken") == [(sides.b[1], "seal_broken")]
    assert _items(client, world.man1, instrument=sides.a[1]) == []
    refused = client.get(URL, params={"instrument": sides.b[0]}, headers=world.man1.headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.get(URL, headers=world.admin.headers).status_code == 403
    assert client.get(URL).status_code == 401
    item = _get(client, world.auth1, instrument=sides.a[0])["items"][0]
    assert item["at"] == "2026-03-02T00:30:00.000Z" and item["severity"] == "critical"
    assert item["evidence"] == {"count": 1, "quantity": QTY, "previous_value": 60.0,
                                "value": 1.0, "total_decrease": 59.0}  # fmt: skip
    assert item["segment"] == "api" and item["count"] == 1


def test_the_route_pages_by_instrument_and_kind_and_logs_foreign_reads(
    world: World, client: TestClient, sides: Sides
) -> None:
    whole = _get(client, world.auth1)["items"]
    pages = [_get(client, world.auth1, limit=3)]
    while pages[-1]["next_cursor"]:
        pages.append(_get(client, world.auth1, limit=3, cursor=pages[-1]["next_cursor"]))
    assert [len(p["items"]) for p in pages] == [3, 1]
    assert [x for p in pages for x in p["items"]] == whole
    bad = client.get(URL, params={"cursor": "bm90LW1pbmU"}, headers=world.auth1.headers)
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    assert client.get(URL, params={"kind": "drift"}, headers=world.auth1.headers).status_code == 422
    log = _get_log(client, world.man1)
    assert (world.auth1.id, "stream_alerts.read", sides.a[0]) in log
    assert not any(reader == world.man1.id for reader, _, _ in log)


def _get_log(client: TestClient, owner: Member) -> set[tuple[str, str, str]]:
    r = client.get("/api/v1/access-log", params={"limit": 1000}, headers=owner.headers)
    assert r.status_code == 200, r.text
    return {(e["reader_id"], e["action"], e["resource_id"]) for e in r.json()["items"]}


def _cli(root: Path, *args: str) -> tuple[int, str, str]:
    width = cli_out._width
    cli_out._width = 240
    try:
        result = CliRunner().invoke(cli_app, [*args, "--data-dir", str(root)],
                                    env={"COLUMNS": "240"})  # fmt: skip
    finally:
        cli_out._width = width
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_prints_the_streaming_alerts(fleet: Fleet) -> None:
    code, out, err = _cli(fleet.root, "monitor", "alerts", "--json")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        stream_alert_json(a) for a in fleet.stream
    ]
    one = fleet.stream[0]
    code, out, _ = _cli(fleet.root, "monitor", "alerts", "--instrument", one.instrument,
                        "--kind", one.kind)  # fmt: skip
    assert code == 0 and "1 streaming alert(s)" in out and one.instrument in out
    code, out, err = _cli(fleet.root, "monitor", "alerts", "--kind", "drift")
    assert code == 2 and out == "" and "streaming mode raises no 'drift' alert" in err
    assert len(err.strip().splitlines()) == 1
