"""An instrument's readings from the lake: the readers' rules, the access log, keyset pages."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from metrocloud.domain.errors import Forbidden
from metrocloud.ingest import Intake, IntakeLimits, LakeFlusher
from metrocloud.lake import Lake
from metrocloud.services import instruments as inst
from metrocloud.services.readings import instrument_measurements
from metrocloud.store.schema import access_log
from metrocloud.trust.keys import PrivateKey
from tests.conftest import World, software
from tests.ingest.test_intake import NOW, Meter


@pytest.fixture
def setup(world: World) -> tuple[World, Intake, Meter]:
    cert = world.certificate(world.nb1, world.man1)
    key = PrivateKey.generate()
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial="R-1",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(key.public_key.to_spki_b64(),),
            )
        ],
    )
    intake = Intake(world.node.db, clock=lambda: NOW, limits=IntakeLimits(cache_seconds=0))
    return world, intake, Meter(refs[0]["id"], key, software("1.0.0").checksum)


def _flush(world: World) -> None:
    lake = Lake.open(world.node.settings.lake_path(), create=True)
    try:
        LakeFlusher(world.node.db, lake).flush_all()
    finally:
        lake.close()


def test_readers_page_through_the_readings_and_each_read_is_logged(setup: Any) -> None:
    world, intake, meter = setup
    assert instrument_measurements(world.node, world.auth1.actor, meter.instrument).items == []
    batches = [meter.batch(n=5) for _ in range(3)]
    intake.submit([b.wire() for b in batches], "http")
    _flush(world)
    expected = [t for b in batches for t in b.parse().t]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = instrument_measurements(
            world.node, world.auth1.actor, meter.instrument, limit=4, cursor=cursor
        )
        seen += [r["t"] for r in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(expected) == 15 and len(set(seen)) == 15
    assert pages == 4
    first = instrument_measurements(world.node, world.man1.actor, meter.instrument, limit=1)
    assert first.items[0] == {
        "t": seen[0],
        "quantity": "1-0:1.8.0",
        "value": 100.0,
        "unit": "kWh",
        "status": 0,
        "batch_counter": 1,
    }
    with world.node.db.read() as conn:
        logged = (
            conn.execute(
                select(access_log.c.reader_id).where(access_log.c.action == "measurements.read")
            )
            .scalars()
            .all()
        )
    assert set(logged) == {world.auth1.id}  # the manufacturer's own reads are not logged
    assert len(logged) == pages + 1


def test_foreign_parties_and_the_node_admin_read_no_readings(setup: Any) -> None:
    world, _intake, meter = setup
    for who in ("man2", "op2", "nb2", "admin"):
        with pytest.raises(Forbidden):
            instrument_measurements(world.node, world.members[who].actor, meter.instrument)
