"""The intake's checks, in order, each with its reason; what is kept and what is quarantined."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import pytest
from sqlalchemy import select, update

from metrocloud.domain.certificates import CertificateAction
from metrocloud.formats.batches import GENESIS_PREV, SignedBatch, encode_batch
from metrocloud.ingest import REASONS, Intake, IntakeLimits
from metrocloud.services import certificates as certs
from metrocloud.services import instruments as inst
from metrocloud.store.schema import (
    device_keys,
    instruments,
    intake_batches,
    intake_flags,
    intake_rounds,
    quarantine,
)
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey
from tests.conftest import World, software

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = int((NOW - timedelta(hours=2)).timestamp() * 1000)
STEP = 60 * 1000
NOWHERE = "ins-DE-00000000000000000000000000"
DAY = 86_400_000


@dataclass
class Meter:
    """A registered instrument and its device key, signing batches like a device."""

    instrument: str
    key: PrivateKey
    software: str
    counter: int = 0
    prev: str = GENESIS_PREV
    next_t: int = T0
    sent: list[SignedBatch] = field(default_factory=list)

    def batch(self, n: int = 4, **override: Any) -> SignedBatch:
        fields: dict[str, Any] = {
            "instrument": self.instrument,
            "counter": self.counter + 1,
            "prev": self.prev,
            "software": self.software,
            "quantity": "1-0:1.8.0",
            "unit": "kWh",
            "t": [self.next_t + i * STEP for i in range(n)],
            "value": [100.0 + i for i in range(n)],
            "status": [0] * n,
        }
        own = not override  # the device's own next batch: its chain moves on
        key = override.pop("key", self.key)
        fields.update(override)
        signed = encode_batch(key, **fields)
        if own:
            self.counter += 1
            self.prev = signed.digest
            self.next_t += n * STEP
        self.sent.append(signed)
        return signed


@pytest.fixture
def setup(world: World) -> tuple[World, Intake, Meter]:
    cert = world.certificate(world.nb1, world.man1)
    key = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial="M-1",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(key.public_key.to_spki_b64(),),
            )
        ],
    )
    intake = Intake(world.node.db, clock=lambda: NOW, limits=IntakeLimits(cache_seconds=0))
    return world, intake, Meter(refs[0]["id"], key, software("1.0.0").checksum)


def _quarantined(world: World) -> list[Any]:
    with world.node.db.read() as conn:
        return list(conn.execute(select(quarantine).order_by(quarantine.c.id)).all())


def _held(world: World) -> list[tuple[str, int]]:
    """(instrument, counter) of the batches the intake log still holds for the lake (in
    rounds not yet deleted), in order."""
    from metrocloud.formats.batches import parse_payload, split_wire
    from metrocloud.ingest.rounds import ARROW, read_arrow_round, split_round

    out: list[tuple[str, int]] = []
    with world.node.db.read() as conn:
        rounds = conn.execute(select(intake_rounds).order_by(intake_rounds.c.id)).all()
    for r in rounds:
        if r.format == ARROW:
            table = read_arrow_round(bytes(r.data))
            columns = (table["instrument"].to_pylist(), table["batch_counter"].to_pylist())
            out += zip(*columns, strict=True)
        else:
            payloads = (parse_payload(split_wire(w)[0]) for w in split_round(bytes(r.data)))
            out += [(p.instrument, p.counter) for p in payloads]
    return out


def _as_wires(world: World, lines: list[bytes]) -> None:
    """Store the (only) round as ``wires`` holding ``lines``: the form imported records and
    lines moved over by migration 0011 have."""
    from metrocloud.ingest.rounds import WIRES, join_round, round_digest

    data = join_round(lines)
    with world.node.db.write() as conn:
        conn.execute(
            update(intake_rounds).values(format=WIRES, data=data, digest=round_digest(data))
        )


def _stored(world: World) -> list[Any]:
    with world.node.db.read() as conn:
        return list(conn.execute(select(intake_batches).order_by(intake_batches.c.id)).all())


def test_a_good_batch_is_accepted_and_stored_once_even_when_replayed(setup: Any) -> None:
    world, intake, meter = setup
    first = meter.batch()
    [outcome] = intake.submit([first.wire()], "http")
    assert (outcome.status, outcome.readings, outcome.counter) == ("accepted", 4, 1)
    [again] = intake.submit([first.wire()], "mqtt")
    assert again.status == "duplicate"
    rows = _stored(world)
    assert [(r.counter, r.digest, r.transport, r.readings) for r in rows] == [
        (1, first.digest, "http", 4)
    ]
    assert _quarantined(world) == []
    assert intake.counts.batches == {"accepted": 1, "duplicate": 1}


def test_the_chain_continues_and_a_gap_is_accepted_but_flagged(setup: Any) -> None:
    world, intake, meter = setup
    outcomes = intake.submit([meter.batch().wire(), meter.batch().wire()], "http")
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    meter.batch()  # lost on the way
    late = meter.batch()
    [outcome] = intake.submit([late.wire()], "http")
    assert (outcome.status, outcome.flags) == ("accepted", ("counter-gap",))
    with world.node.db.read() as conn:
        flags = conn.execute(select(intake_flags)).all()
    assert [(f.instrument_id, f.kind) for f in flags] == [(meter.instrument, "counter-gap")]
    assert "1 batch(es) missing" in flags[0].detail


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("malformed", lambda m: b"MCB1.not-a-batch"),
        (
            "unknown-instrument",
            lambda m: m.batch(instrument="ins-DE-00000000000000000000000000").wire(),
        ),
        ("unknown-key", lambda m: m.batch(key=PrivateKey.generate()).wire()),
        ("bad-signature", lambda m: _tampered(m.batch())),
        ("unapproved-software", lambda m: m.batch(software="ab" * 32).wire()),
        (
            "implausible-time",
            lambda m: m.batch(t=[T0 + DAY + i for i in range(4)]).wire(),
        ),
        (
            "implausible-time",
            lambda m: m.batch(t=[T0 - 401 * 86400 * 1000 + i for i in range(4)]).wire(),
        ),
    ],
)
def test_each_failed_check_quarantines_with_its_reason(setup: Any, reason: str, make: Any) -> None:
    world, intake, meter = setup
    wire = make(meter)
    [outcome] = intake.submit([wire], "mqtt")
    assert (outcome.status, outcome.reason) == ("rejected", reason)
    [q] = _quarantined(world)
    assert (q.reason, q.transport, bytes(q.wire)) == (reason, "mqtt", wire)
    assert q.detail == outcome.detail and q.detail
    assert _stored(world) == []
    assert reason in REASONS


def test_rollback_and_a_broken_chain_are_rejected_and_nothing_accepted_is_touched(
    setup: Any,
) -> None:
    world, intake, meter = setup
    good = [meter.batch(), meter.batch()]
    intake.submit([b.wire() for b in good], "http")
    forged_old = meter.batch(
        counter=1, prev=GENESIS_PREV, value=[1.0, 2.0, 3.0, 4.0], t=[T0 + i for i in range(4)]
    )
    wrong_prev = meter.batch(counter=3, prev="cd" * 32, t=[T0 + 10 * STEP + i for i in range(4)])
    outcomes = intake.submit([forged_old.wire(), wrong_prev.wire()], "http")
    assert [(o.status, o.reason) for o in outcomes] == [
        ("rejected", "counter-rollback"),
        ("rejected", "chain-broken"),
    ]
    assert [r.digest for r in _stored(world)] == [b.digest for b in good]
    assert [q.reason for q in _quarantined(world)] == ["counter-rollback", "chain-broken"]


def test_an_older_batch_sent_again_is_a_duplicate_and_an_altered_one_a_rollback(
    setup: Any,
) -> None:
    """A replay of a batch older than the key's newest is found by its first reading's
    time, key and counter (the index the log grows at its end)."""
    world, intake, meter = setup
    first, second, third = meter.batch(), meter.batch(), meter.batch()
    for b in (first, second, third):  # three transactions
        intake.submit([b.wire()], "http")
    altered = meter.batch(counter=2, prev=first.digest, t=second.parse().t, value=[7.0] * 4)
    moved = meter.batch(counter=2, prev=first.digest, t=[T0 - 4 * STEP + i for i in range(4)])
    outcomes = intake.submit([first.wire(), second.wire(), altered.wire(), moved.wire()], "mqtt")
    assert [(o.status, o.counter) for o in outcomes] == [
        ("duplicate", 1),
        ("duplicate", 2),
        ("rejected", 2),
        ("rejected", 2),
    ]
    assert {o.reason for o in outcomes[2:]} == {"counter-rollback"}
    assert "differs from the batch accepted with it" in (outcomes[2].detail or "")
    assert "differs" not in (outcomes[3].detail or "")  # not found by its own time
    assert [r.counter for r in _stored(world)] == [1, 2, 3]


def test_a_revoked_key_is_refused(setup: Any) -> None:
    world, intake, meter = setup
    with world.node.db.write() as conn:
        conn.execute(update(device_keys).values(revoked_leaf=1))
    [outcome] = intake.submit([meter.batch().wire()], "http")
    assert outcome.reason == "revoked-key"


def test_a_suspended_certificate_approves_no_software_and_the_instrument_is_flagged(
    setup: Any,
) -> None:
    world, intake, meter = setup
    _suspend_certificate(world, meter.instrument)
    [outcome] = intake.submit([meter.batch().wire()], "http")
    assert outcome.reason == "unapproved-software"
    assert "suspended" in (outcome.detail or "")
    with world.node.db.read() as conn:
        kinds = conn.execute(select(intake_flags.c.kind)).scalars().all()
    assert kinds == ["unapproved-software"]


def test_one_submission_mixing_good_and_bad_keeps_the_good(setup: Any) -> None:
    world, intake, meter = setup
    b1 = meter.batch()
    bad = meter.batch(key=PrivateKey.generate())
    b2 = meter.batch()
    outcomes = intake.submit([b1.wire(), bad.wire(), b2.wire(), b1.wire()], "http")
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted", "duplicate"]
    assert [r.counter for r in _stored(world)] == [1, 2]


def _tampered(batch: SignedBatch) -> bytes:
    """The same wire line with one reading's value changed (signature kept)."""
    payload = batch.payload.replace(b'"value":[100', b'"value":[900', 1)
    assert payload != batch.payload
    enc = base64.urlsafe_b64encode(payload).rstrip(b"=")
    sig = base64.urlsafe_b64encode(batch.signature).rstrip(b"=")
    return b"MCB1." + enc + b"." + sig


# -- into the lake -------------------------------------------------------------------------


def _lake_rows(lake: Any) -> list[tuple[str, int, float, int]]:
    from metrocloud.lake import DuckDBEngine

    engine = DuckDBEngine(lake.snapshot())
    try:
        rows = engine.sql(
            "SELECT instrument, epoch_ms(t) AS t, value, batch_counter FROM readings ORDER BY t"
        ).to_pylist()
    finally:
        engine.close()
    return [(r["instrument"], r["t"], r["value"], r["batch_counter"]) for r in rows]


def test_the_flusher_puts_every_accepted_reading_in_the_lake_exactly_once(
    setup: Any, tmp_path: Any
) -> None:
    from metrocloud.ingest import LakeFlusher
    from metrocloud.lake import Lake

    world, intake, meter = setup
    batches = [meter.batch() for _ in range(5)]
    intake.submit([b.wire() for b in batches[:3]], "http")
    intake.submit([batches[3].wire(), meter.batch(key=PrivateKey.generate()).wire()], "mqtt")

    steps: list[str] = []

    def crash_after_lake_commit(step: str) -> None:
        steps.append(step)
        if step == "commit.replaced" and steps.count(step) == 1:
            raise RuntimeError("killed")

    lake = Lake.open(tmp_path / "lake", create=True, on_step=crash_after_lake_commit)
    flusher = LakeFlusher(world.node.db, lake, max_batches=2)
    with pytest.raises(RuntimeError, match="killed"):
        flusher.flush_once()  # the lake holds the segment, the intake log does not know yet
    intake.submit([batches[4].wire()], "http")
    assert flusher.flush_all() > 0
    expected = sorted(
        (meter.instrument, t, v, b.parse().counter)
        for b in batches
        for t, v in zip(b.parse().t, b.parse().value, strict=True)
    )
    assert sorted(_lake_rows(lake)) == expected  # each accepted reading once, none rejected
    assert all(r.segment for r in _stored(world)) and _held(world) == []  # rounds gone
    assert flusher.flush_once() == 0
    lake.close()


# -- many submissions at once (group commit) ------------------------------------------------


def _meters(world: World, n: int) -> list[Meter]:
    cert = world.certificate(world.nb1, world.man1)
    keys = [PrivateKey.generate(KeyAlgorithm.ECDSA_P256) for _ in range(n)]
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial=f"G-{i}",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(k.public_key.to_spki_b64(),),
            )
            for i, k in enumerate(keys)
        ],
    )
    return [Meter(r["id"], k, software("1.0.0").checksum) for r, k in zip(refs, keys, strict=True)]


def _submit_all(intake: Intake, meter: Meter, rounds: int, out: dict[str, Any]) -> None:
    try:
        out[meter.instrument] = [
            intake.submit([meter.batch(1).wire(), meter.batch(2).wire()], "http")
            for _ in range(rounds)
        ]
    except Exception as exc:  # pragma: no cover - reported by the assertion below
        out[meter.instrument] = exc


@contextmanager
def _database_busy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """While inside, the intake's leader waits for the database (its write turn)."""
    from metrocloud.ingest import intake as module

    gate = threading.Lock()
    monkeypatch.setattr(module, "write_turn", lambda db: gate)
    with gate:
        yield


def _wait_queued(intake: Intake, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(intake._queue) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_concurrent_submissions_share_transactions_and_keep_each_chain(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    meters = _meters(world, 6)
    intake = Intake(world.node.db, clock=lambda: NOW)
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=_submit_all, args=(intake, m, 1, out)) for m in meters]
    with _database_busy(monkeypatch):  # every submission queues behind the first
        for t in threads:
            t.start()
        _wait_queued(intake, len(meters))
    for t in threads:
        t.join()
    assert intake.rounds == 1 and intake.submissions == len(meters)  # one shared transaction
    for m in meters:
        [outcomes] = out[m.instrument]
        assert [(o.status, o.counter, o.readings) for o in outcomes] == [
            ("accepted", 1, 1),
            ("accepted", 2, 2),
        ]
    rows = _stored(world)
    assert len(rows) == 2 * len(meters)
    assert {(r.instrument_id, r.counter) for r in rows} == {
        (m.instrument, c) for m in meters for c in (1, 2)
    }
    # and later submissions continue each chain
    for m in meters:
        [again] = intake.submit([m.batch().wire()], "http")
        assert (again.status, again.counter, again.flags) == ("accepted", 3, ())


def test_two_intakes_racing_on_the_same_batches_store_each_once(world: World) -> None:
    """Two workers (two intakes over one database) get the same lines at the same time, as
    from a device that sent again to the other worker: each batch is stored once, answered
    accepted by one and duplicate by the other (on PostgreSQL, where both decide side by
    side, the keys' counter rows are locked while one decides)."""
    meters = _meters(world, 3)
    lines = {m.instrument: [m.batch(1).wire() for _ in range(6)] for m in meters}
    intakes = [Intake(world.node.db, clock=lambda: NOW) for _ in range(2)]
    answers: list[Any] = []
    go = threading.Barrier(2 * len(meters))

    def send(intake: Intake, m: Meter) -> None:
        go.wait()
        for line in lines[m.instrument]:
            for _ in range(3):  # a device sends again when it got no answer
                try:
                    [outcome] = intake.submit([line], "http")
                except Exception:
                    continue
                answers.append((m.instrument, outcome.counter, outcome.status))
                break

    threads = [threading.Thread(target=send, args=(i, m)) for m in meters for i in intakes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((r.instrument_id, r.counter) for r in _stored(world)) == sorted(
        (m.instrument, c) for m in meters for c in range(1, 7)
    )
    by_batch: dict[tuple[str, int], list[str]] = {}
    for instrument, counter, status in answers:
        by_batch.setdefault((instrument, counter), []).append(status)
    assert len(by_batch) == 18
    assert all(sorted(s) == ["accepted", "duplicate"] for s in by_batch.values())


def test_a_failing_submission_does_not_fail_the_others_of_its_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocloud.ingest import intake as module

    meters = _meters(world, 3)
    intake = Intake(world.node.db, clock=lambda: NOW)
    real = module.Intake._decide_all

    def decide_all(self: Intake, conn: Any, sub: Any, *args: Any) -> Any:
        if sub.transport == "boom":
            raise RuntimeError("storage hiccup")
        return real(self, conn, sub, *args)

    monkeypatch.setattr(module.Intake, "_decide_all", decide_all)
    results: dict[str, Any] = {}

    def send(m: Meter, transport: str) -> None:
        try:
            results[m.instrument] = intake.submit([m.batch().wire()], transport)
        except RuntimeError as exc:
            results[m.instrument] = exc

    threads = [
        threading.Thread(target=send, args=(m, t))
        for m, t in zip(meters, ("http", "boom", "mqtt"), strict=True)
    ]
    with _database_busy(monkeypatch):
        for t in threads:
            t.start()
        _wait_queued(intake, len(meters))
    for t in threads:
        t.join()
    good, bad, other = (results[m.instrument] for m in meters)
    assert isinstance(bad, RuntimeError)
    assert [o.status for o in good] == ["accepted"] and [o.status for o in other] == ["accepted"]
    assert {r.instrument_id for r in _stored(world)} == {meters[0].instrument, meters[2].instrument}


def _suspend_certificate(world: Any, instrument: str) -> None:
    """The notified body suspends the certificate of ``instrument``'s type."""
    with world.node.db.read() as conn:
        cert_id = conn.execute(
            select(instruments.c.certificate_id).where(instruments.c.id == instrument)
        ).scalar_one()
    certs.change_certificate(
        world.node, world.nb1.actor, cert_id, CertificateAction.SUSPEND, reason="audit finding"
    )


def _count_loads(intake: Intake) -> list[int]:
    """The sizes of the intake's registry loads, as they happen."""
    loads: list[int] = []
    real = intake._load

    def counting(ids: Any) -> Any:
        loads.append(len(ids))
        return real(ids)

    intake._load = counting  # type: ignore[method-assign]
    return loads


def test_registry_facts_of_a_whole_submission_come_in_one_load(world: World) -> None:
    meters = _meters(world, 4)
    intake = Intake(world.node.db, clock=lambda: NOW)
    loads = _count_loads(intake)
    lines = [m.batch().wire() for m in meters] + [meters[0].batch().wire()]
    assert [o.status for o in intake.submit(lines, "http")] == ["accepted"] * 5
    assert loads == [4]
    intake.submit([meters[1].batch().wire()], "http")
    assert loads == [4]  # cached (cache_seconds)


def test_expired_registry_facts_are_read_again_only_when_the_registry_changed(
    setup: Any,
) -> None:
    """Past ``cache_seconds`` (0 here) an instrument's facts are confirmed by the size of
    the node's log; a change of the registry (a statement appended) makes the intake read
    them again, and the very next submission sees it."""
    world, intake, meter = setup
    loads = _count_loads(intake)
    for _ in range(3):
        [outcome] = intake.submit([meter.batch().wire()], "http")
        assert outcome.status == "accepted"
    assert loads == [1]  # read once: the log did not grow
    _suspend_certificate(world, meter.instrument)
    [outcome] = intake.submit([meter.batch().wire()], "http")
    assert (outcome.status, outcome.reason) == ("rejected", "unapproved-software")
    assert loads == [1, 1]


# -- the flusher ----------------------------------------------------------------------------


def _lake(tmp_path: Any) -> Any:
    from metrocloud.lake import Lake

    return Lake.open(tmp_path / "lake", create=True)


def test_segments_are_bounded_by_readings_and_batches(setup: Any, tmp_path: Any) -> None:
    from metrocloud.ingest import LakeFlusher

    world, intake, meter = setup
    batches = [meter.batch(4) for _ in range(7)]
    for b in batches:  # a round each (a segment takes whole rounds)
        intake.submit([b.wire()], "http")
    lake = _lake(tmp_path)
    flusher = LakeFlusher(world.node.db, lake, max_batches=5, max_readings=10)
    sizes = []
    while n := flusher.flush_once():
        sizes.append(n)
    assert sizes == [8, 8, 8, 4]  # 10 readings allow two batches of 4; one round at least
    big = LakeFlusher(world.node.db, lake, max_readings=1)
    intake.submit([meter.batch(4).wire(), meter.batch(4).wire()], "http")
    assert big.flush_once() == 8 and big.segments_flushed == 1  # a round is never split
    assert len(_lake_rows(lake)) == 36
    lake.close()


def test_several_pending_segments_are_all_written_after_a_restart(
    setup: Any, tmp_path: Any
) -> None:
    from metrocloud.ingest import LakeFlusher

    world, intake, meter = setup
    batches = [meter.batch() for _ in range(5)]
    for b in batches:  # five rounds
        intake.submit([b.wire()], "http")
    lake = _lake(tmp_path)
    crashed = LakeFlusher(world.node.db, lake, max_batches=2)
    assert crashed._plan() and crashed._plan()  # two segments planned, then the process died
    restarted = LakeFlusher(world.node.db, lake, max_batches=2)
    assert restarted.flush_all() == 20
    expected = sorted(
        (meter.instrument, t, v, b.parse().counter)
        for b in batches
        for t, v in zip(b.parse().t, b.parse().value, strict=True)
    )
    assert sorted(_lake_rows(lake)) == expected
    assert all(r.segment for r in _stored(world)) and _held(world) == []
    assert {r.segment for r in _stored(world)} == {"intake-r1-2", "intake-r3-4", "intake-r5-5"}
    lake.close()


def test_the_background_flusher_writes_everything_once(setup: Any, tmp_path: Any) -> None:
    from metrocloud.ingest import LakeFlusher

    world, intake, meter = setup
    lake = _lake(tmp_path)
    flusher = LakeFlusher(world.node.db, lake, max_batches=3, interval_s=0.01)
    flusher.start()
    sent = []
    for _ in range(4):
        sent += [meter.batch(2) for _ in range(4)]
        intake.submit([b.wire() for b in sent[-4:]], "http")
    deadline = time.monotonic() + 30
    while flusher.readings_flushed < 32 and time.monotonic() < deadline:
        time.sleep(0.02)
    flusher.stop()
    assert flusher.readings_flushed == 32
    assert len(_lake_rows(lake)) == 32
    assert _held(world) == []  # flushed: the rounds are gone
    lake.close()


def test_an_altered_intake_log_is_refused_not_written(setup: Any, tmp_path: Any) -> None:
    from metrocloud.ingest import LakeFlusher
    from metrocloud.ingest.flusher import IntakeLogCorrupt

    world, intake, meter = setup
    good, other = meter.batch(), meter.batch()
    intake.submit([good.wire(), other.wire()], "http")
    with world.node.db.read() as conn:
        data = bytearray(conn.execute(select(intake_rounds.c.data)).scalar_one())
    data[-100] ^= 1  # one bit of the decoded readings
    with world.node.db.write() as conn:
        conn.execute(update(intake_rounds).values(data=bytes(data)))
    lake = _lake(tmp_path)
    flusher = LakeFlusher(world.node.db, lake)
    with pytest.raises(IntakeLogCorrupt, match="does not hash to the digest"):
        flusher.flush_once()
    assert _lake_rows(lake) == []
    _as_wires(world, [good.wire(), _tampered(other)])  # a stored line altered
    with pytest.raises(IntakeLogCorrupt, match=other.digest):
        flusher.flush_once()
    assert _lake_rows(lake) == []
    lake.close()


@pytest.mark.parametrize(
    ("values", "quantity", "unit"),
    [
        ([1.5, 2, -3.25, 1e-7, 4.5e15, 123456789.125, 9007199254740991], "1-0:1.8.0", "kWh"),
        ([0, 0.1, 5e-324, -9007199254740991, -0.5, 42, 3.0e-5], "Volumen Vₙ", "m³"),
    ],
)
def test_the_fast_decoder_reads_payloads_as_json_does(
    setup: Any, values: list[float], quantity: str, unit: str
) -> None:
    from metrocloud.ingest import flusher as module

    _, _, meter = setup
    n = len(values)
    batches = [
        meter.batch(
            counter=c,
            prev=GENESIS_PREV,
            t=[T0 + c * 1000 + i for i in range(n)],
            value=values,
            status=[0, 1, 2**31 - 1, 7, 0, 3, 9][:n],
            quantity=quantity,
            unit=unit,
        )
        for c in (1, 2)
    ]
    payloads = [b.payload for b in batches]
    matches = [module._CANONICAL.fullmatch(p) for p in payloads]
    fast = module._canonical_fields([m.groups() for m in matches if m is not None])
    assert fast is not None and None not in matches
    for got, want in zip(fast, module._json_fields(payloads), strict=True):
        assert got.equals(want) if hasattr(got, "equals") else got == want


def test_busy_threads_step_aside_while_a_writer_holds_the_database() -> None:
    from metrocloud.ingest.intake import _Turns

    turns = _Turns()
    order: list[str] = []
    inside = threading.Event()
    leave = threading.Event()

    def writer() -> None:
        with turns.writing():
            inside.set()
            leave.wait(10)
            order.append("writer done")

    def checker() -> None:
        inside.wait(10)
        turns.pause()  # waits for the writer
        order.append("checker on")

    threads = [threading.Thread(target=writer), threading.Thread(target=checker)]
    for t in threads:
        t.start()
    inside.wait(10)
    time.sleep(0.05)
    assert order == []
    leave.set()
    for t in threads:
        t.join()
    assert order == ["writer done", "checker on"]
    with turns.flushing():
        turns.pause_for_writers()  # the flusher does not wait for itself
    assert not turns.busy


def test_write_turns_queue_in_a_lock_file_next_to_a_sqlite_database(world: World) -> None:
    from metrocloud.store.turns import write_turn

    db = world.node.db
    with write_turn(db):
        pass
    if db.is_sqlite:
        database = Path(str(db.url.database)).resolve()
        assert database.with_name(database.name + "-write.lock").exists()
        assert database.with_name(database.name + "-flush.lock").exists()


def test_a_crash_in_the_middle_of_planning_or_finishing_loses_and_repeats_nothing(
    setup: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocloud.ingest import LakeFlusher
    from metrocloud.ingest import flusher as module

    world, intake, meter = setup
    batches = [meter.batch() for _ in range(7)]
    for b in batches:  # seven rounds
        intake.submit([b.wire()], "http")
    monkeypatch.setattr(module, "_DB_CHUNK", 2)  # plan in parts of two batches
    lake = _lake(tmp_path)
    flusher = LakeFlusher(world.node.db, lake)
    real_write = world.node.db.write
    calls = {"n": 0}

    def dying_write() -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second part of the plan
            raise RuntimeError("killed")
        return real_write()

    monkeypatch.setattr(world.node.db, "write", dying_write)
    with pytest.raises(RuntimeError, match="killed"):
        flusher.flush_once()
    assert {r.segment for r in _stored(world)} == {"intake-r1-7", None}  # two planned
    calls["n"] = -100  # the finish dies later: after the lake committed the segment
    assert LakeFlusher(world.node.db, lake).flush_once() == 8
    calls["n"] = 0

    def finish_dies() -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # plan: 3 parts of 2 rounds (5 left); then the finish
            raise RuntimeError("killed")
        return real_write()

    monkeypatch.setattr(world.node.db, "write", finish_dies)
    with pytest.raises(RuntimeError, match="killed"):
        LakeFlusher(world.node.db, lake).flush_once()
    monkeypatch.setattr(world.node.db, "write", real_write)
    # the segment's rounds are still there: it is handed to the lake again, which already
    # holds it (a no-op), and finished
    assert _held(world) == [(meter.instrument, b.parse().counter) for b in batches[2:]]
    assert LakeFlusher(world.node.db, lake).flush_all() == 20
    expected = sorted(
        (meter.instrument, t, v, b.parse().counter)
        for b in batches
        for t, v in zip(b.parse().t, b.parse().value, strict=True)
    )
    assert sorted(_lake_rows(lake)) == expected
    assert all(r.segment for r in _stored(world)) and _held(world) == []
    lake.close()


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (lambda good, other: [good], "holds 1 wire lines for 2 batches"),
        (lambda good, other: [good, other, good], "holds 3 wire lines for 2 batches"),
        (lambda good, other: [other, good], "does not hash to it"),  # the order matters
    ],
)
def test_a_wires_round_that_does_not_hold_its_batches_lines_is_refused(
    setup: Any, tmp_path: Any, lines: Any, reason: str
) -> None:
    from metrocloud.ingest import LakeFlusher
    from metrocloud.ingest.flusher import IntakeLogCorrupt

    world, intake, meter = setup
    good, other = meter.batch(), meter.batch()
    intake.submit([good.wire(), other.wire()], "http")
    _as_wires(world, lines(good.wire(), other.wire()))
    lake = _lake(tmp_path)
    with pytest.raises(IntakeLogCorrupt, match=reason):
        LakeFlusher(world.node.db, lake).flush_once()
    assert _lake_rows(lake) == []
    lake.close()


def test_an_arrow_round_that_does_not_hold_its_batches_is_refused(
    setup: Any, tmp_path: Any
) -> None:
    """Data that hashes to its digest but is no round of the intake's, or holds fewer
    batches than its record says."""
    from metrocloud.ingest import LakeFlusher
    from metrocloud.ingest.flusher import IntakeLogCorrupt
    from metrocloud.ingest.rounds import read_arrow_round, round_digest

    world, intake, meter = setup
    intake.submit([meter.batch().wire(), meter.batch().wire()], "http")
    with world.node.db.read() as conn:
        data = bytes(conn.execute(select(intake_rounds.c.data)).scalar_one())
    table = read_arrow_round(data)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.slice(0, 1))
    shorter = sink.getvalue().to_pybytes()
    lake = _lake(tmp_path)
    for bad, reason in ((b"not arrow", "not an Arrow IPC stream"), (shorter, "holds 1 batches")):
        with world.node.db.write() as conn:
            conn.execute(update(intake_rounds).values(data=bad, digest=round_digest(bad)))
        with pytest.raises(IntakeLogCorrupt, match=reason):
            LakeFlusher(world.node.db, lake).flush_once()
    assert _lake_rows(lake) == []
    lake.close()


def test_a_wires_round_gives_the_lake_what_an_arrow_round_gives(setup: Any, tmp_path: Any) -> None:
    """The same batches, flushed from the readings the intake decoded and from their wire
    lines (as a round moved over by migration 0011 holds them): the same lake rows."""
    from metrocloud.ingest import LakeFlusher

    world, intake, meter = setup
    batches = [meter.batch(n) for n in (1, 4, 3)]
    intake.submit([b.wire() for b in batches], "http")
    tables = []
    for name, wires in (("arrow", False), ("wires", True)):
        if wires:
            with world.node.db.write() as conn:
                conn.execute(update(intake_rounds).values(segment=None))
                conn.execute(update(intake_batches).values(segment=None))
            _as_wires(world, [b.wire() for b in batches])
        flusher = LakeFlusher(world.node.db, _lake(tmp_path / name))
        prepared = flusher._prepare()
        assert prepared is not None
        tables.append(prepared.table)
        flusher.lake.close()
    arrow, wired = tables
    assert arrow.num_rows == 8 and arrow.equals(wired)
    assert arrow["seq"].to_pylist() == [0, 0, 1, 2, 3, 0, 1, 2]


def test_one_round_per_transaction_holds_the_accepted_readings_in_order(setup: Any) -> None:
    """The readings of what one submission accepted are one round, decoded, in the order of
    the batches' ids; rejected and duplicate lines are not in it."""
    from metrocloud.ingest.rounds import read_arrow_round

    world, intake, meter = setup
    first, second = meter.batch(), meter.batch(2)
    intake.submit([first.wire()], "http")
    outcomes = intake.submit(
        [first.wire(), second.wire() + b"  \r\n", meter.batch(key=PrivateKey.generate()).wire()],
        "mqtt",
    )
    assert [o.status for o in outcomes] == ["duplicate", "accepted", "rejected"]
    with world.node.db.read() as conn:
        rounds = conn.execute(select(intake_rounds).order_by(intake_rounds.c.id)).all()
    assert [(r.format, r.batches, r.readings, r.segment) for r in rounds] == [
        ("arrow", 1, 4, None),
        ("arrow", 1, 2, None),
    ]
    assert [r.round_id for r in _stored(world)] == [rounds[0].id, rounds[1].id]
    held = read_arrow_round(bytes(rounds[1].data)).to_pylist()
    p = second.parse()
    assert held == [
        {
            "instrument": meter.instrument,
            "category": _stored(world)[1].category,
            "key_id": meter.key.public_key.key_id,
            "batch_counter": 2,
            "quantity": p.quantity,
            "unit": p.unit,
            "ingested_at": held[0]["ingested_at"],
            "t": p.t,
            "value": p.value,
            "status": p.status,
        }
    ]
    received = datetime.fromisoformat(_stored(world)[1].received_at.replace("Z", "+00:00"))
    assert held[0]["ingested_at"] == int(received.timestamp() * 1000)


def test_round_ids_are_never_used_again(setup: Any, tmp_path: Any) -> None:
    """Once every round is flushed and deleted, the next round still gets a new id: the
    batches of an earlier round never join a later one's segment."""
    from metrocloud.ingest import LakeFlusher

    world, intake, meter = setup
    lake = _lake(tmp_path)
    flusher = LakeFlusher(world.node.db, lake)
    for n in range(1, 4):
        intake.submit([meter.batch().wire()], "http")
        assert flusher.flush_all() == 4 and _held(world) == []
        assert [r.round_id for r in _stored(world)] == list(range(1, n + 1))
        assert len({r.segment for r in _stored(world)}) == n
    assert len(_lake_rows(lake)) == 12
    lake.close()
