"""Point reads on the driver cursor give the same row values as SQLAlchemy Core."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

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
