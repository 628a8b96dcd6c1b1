"""A small node's instrument with a life cycle, readings in the lake, intake findings and
reads by others: the case the forensics tests and the evidence CLI tests look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.instruments import EventKind
from metrocloud.ingest import Intake, IntakeLimits, LakeFlusher
from metrocloud.lake import Lake
from metrocloud.services import certificates as certs
from metrocloud.services import declarations as decl
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services.instruments import get_instrument
from metrocloud.trust.keys import PrivateKey
from tests.conftest import World, software
from tests.ingest.test_intake import NOW, Meter

__all__ = ["Case", "populate"]


@dataclass
class Case:
    world: World
    instrument: str
    other: str  # an instrument of the same manufacturer, not in the case
    certificate: str
    meter: Meter
    leaves: dict[str, list[int]] = field(default_factory=dict)
    readings: int = 0


def _event(world: World, who: str, instrument: str, kind: EventKind, **details: Any) -> int:
    [out] = ev.record_events(
        world.node,
        world.members[who].actor,
        [ev.EventDraft(instrument_id=instrument, kind=kind, details=details)],
    )
    return int(out["leaf_index"])


def _flush(world: World) -> None:
    lake = Lake.open(world.node.settings.lake_path(), create=True)
    try:
        LakeFlusher(world.node.db, lake).flush_all()
    finally:
        lake.close()


def populate(world: World) -> Case:
    """man1's meter under nb1's certificate, operated by op1, verified by auth1; 3 accepted
    batches of 5 readings (one after a lost batch: a counter gap), one quarantined batch; a
    declaration; the certificate suspended and reinstated; auth2 read the instrument."""
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    key = PrivateKey.generate()
    refs, reg_leaf = inst.register_instruments(
        node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial="FX-1",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(key.public_key.to_spki_b64(),),
            ),
            inst.InstrumentDraft(serial="FX-2", certificate_id=cert["id"], region="DE21"),
        ],
    )
    iid, other = refs[0]["id"], refs[1]["id"]
    case = Case(world, iid, other, cert["id"], Meter(iid, key, software("1.0.0").checksum))
    case.leaves["registered"] = [reg_leaf]
    case.leaves["events"] = [
        _event(world, "man1", iid, EventKind.PLACED_ON_MARKET),
        _event(world, "op1", iid, EventKind.PUT_INTO_SERVICE, region="DE21"),
        _event(
            world,
            "auth1",
            iid,
            EventKind.VERIFIED,
            verified_until=(date.today() + timedelta(days=365)).isoformat(),
        ),
    ]
    _event(world, "man1", other, EventKind.PLACED_ON_MARKET)  # not about the case's instrument
    d = decl.declare_conformity(
        node,
        world.man1.actor,
        certificate_id=cert["id"],
        instrument_ids=[iid],
        module=ConformityModule.D,
    )
    case.leaves["declarations"] = [int(d["leaf_index"])]

    intake = Intake(node.db, clock=lambda: NOW, limits=IntakeLimits(cache_seconds=0))
    meter = case.meter
    first = [meter.batch(n=5), meter.batch(n=5)]
    meter.batch(n=5)  # lost on the way: the next batch is flagged (counter gap)
    late = meter.batch(n=5)
    outcomes = intake.submit([b.wire() for b in (*first, late)], "http")
    assert [o.status for o in outcomes] == ["accepted"] * 3, outcomes
    [bad] = intake.submit([meter.batch(key=PrivateKey.generate()).wire()], "http")
    assert bad.reason == "unknown-key", bad
    _flush(world)
    case.readings = 15

    for action in (CertificateAction.SUSPEND, CertificateAction.REINSTATE):
        certs.change_certificate(
            node, world.nb1.actor, cert["id"], action, reason=f"forensics test {action}"
        )
    case.leaves["tamper"] = [_event(world, "op1", iid, EventKind.TAMPER_DETECTED, note="seal")]
    case.leaves["events"] += case.leaves["tamper"]
    get_instrument(node, world.auth2.actor, iid)  # lands in man1's and op1's access logs
    return case
