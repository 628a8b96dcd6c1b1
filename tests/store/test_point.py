"""Point reads on the driver cursor give the same row values as SQLAlchemy Core."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from metrocloud.services import instruments as inst
from metrocloud.store.point import get_row
from metrocloud.store.schema import certificates, instruments
from tests.conftest import World


def test_point_read_equals_core_read_for_every_column(world: World) -> None:
    cert = world.certificate(world.nb1, world.man1)
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [inst.InstrumentDraft(serial="P-1", certificate_id=cert["id"], region="DE21")],
    )
    with world.node.db.read() as conn:
        for table, key in ((instruments, refs[0]["id"]), (certificates, cert["id"])):
            core = conn.execute(select(table).where(table.c.id == key)).one()
            point = get_row(conn, table, key)
            assert tuple(point) == tuple(core)
            assert point._fields == tuple(core._fields)
        cert_row = get_row(conn, certificates, cert["id"])
        assert isinstance(cert_row.valid_until, date)  # converted like Core, not a string
        assert get_row(conn, instruments, "ins-DE-00000000000000000000000000") is None


def test_point_read_sees_the_open_write_transaction(world: World) -> None:
    cert = world.certificate(world.nb1, world.man1)
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [inst.InstrumentDraft(serial="P-2", certificate_id=cert["id"], region="DE21")],
    )
    with world.node.db.write() as conn:
        conn.execute(
            instruments.update().where(instruments.c.id == refs[0]["id"]).values(region="DE30")
        )
        assert get_row(conn, instruments, refs[0]["id"]).region == "DE30"
        conn.rollback()


def test_a_pinned_read_sees_every_commit_made_after_the_last_read(world: World) -> None:
    """The event loop's pinned connection ends each read's transaction: a row committed by
    another connection between two reads is seen by the second, raw point reads included."""
    cert = world.certificate(world.nb1, world.man1)
    db = world.node.db
    seen = []
    for n in range(3):
        refs, _ = inst.register_instruments(
            world.node,
            world.man1.actor,
            [inst.InstrumentDraft(serial=f"PIN-{n}", certificate_id=cert["id"], region="DE21")],
        )
        with db.pinned_read() as conn:
            assert get_row(conn, instruments, refs[0]["id"]) is not None  # raw driver cursor
            seen.append(conn.execute(select(instruments.c.id)).scalars().all())  # Core
            pinned = conn
        assert not pinned.in_transaction()
        with db.write() as w:  # a writer is not blocked by the idle pinned connection
            w.execute(
                instruments.update().where(instruments.c.id == refs[0]["id"]).values(region="DE30")
            )
        with db.pinned_read() as conn:
            assert conn is pinned  # the same connection, no pool round trip
            assert get_row(conn, instruments, refs[0]["id"]).region == "DE30"
    assert [len(ids) for ids in seen] == [1, 2, 3]


def test_a_pinned_connection_the_driver_failed_on_is_replaced(world: World) -> None:
    db = world.node.db
    with db.pinned_read() as conn:
        first = conn
    with pytest.raises(DBAPIError), db.pinned_read() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert first.invalidated or first.closed
    with db.pinned_read() as conn:
        assert conn is not first
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_pinned_reads_are_per_thread(world: World) -> None:
    db = world.node.db
    with db.pinned_read() as conn:
        mine = conn
    theirs: list[Any] = []

    def other() -> None:
        with db.pinned_read() as c:
            theirs.append(c)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert theirs[0] is not mine
