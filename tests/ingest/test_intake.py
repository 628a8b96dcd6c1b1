"""The intake's checks, in order, each with its reason; what is kept and what is quarantined."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
        return conn.execute(select(quarantine).order_by(quarantine.c.id)).all()


def _stored(world: World) -> list[Any]:
    with world.node.db.read() as conn:
        return conn.execute(select(intake_batches).order_by(intake_batches.c.id)).all()


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
    with world.node.db.read() as conn:
        cert_id = conn.execute(
            select(instruments.c.certificate_id).where(instruments.c.id == meter.instrument)
        ).scalar_one()
    certs.change_certificate(
        world.node, world.nb1.actor, cert_id, CertificateAction.SUSPEND, reason="audit finding"
    )
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
    assert all(r.wire is None and r.segment for r in _stored(world))  # wire bytes dropped
    assert flusher.flush_once() == 0
    lake.close()
