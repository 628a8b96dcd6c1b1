"""The memoized shell JSON is byte-identical to rendering afresh, and never stale."""

from __future__ import annotations

from sqlalchemy import select

from metrocloud.domain.certificates import CertificateAction
from metrocloud.services import certificates as certs
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, instruments
from metrocloud.twin import (
    instrument_shell,
    instrument_shell_json,
    to_json_bytes,
    type_shell,
    type_shell_json,
)
from tests.conftest import World


def test_memo_equals_fresh_render_and_follows_revisions(node: Node, world: World) -> None:
    cert = world.certificate(world.nb1, world.man1)
    world.instruments(world.man1, cert, 3)
    with node.db.read() as conn:
        rows = conn.execute(select(instruments)).all()
        cert_row = conn.execute(select(certificates).where(certificates.c.id == cert["id"])).one()
    for row in rows:
        assert instrument_shell_json(row) == to_json_bytes(instrument_shell(row))
        assert instrument_shell_json(row) is instrument_shell_json(row)  # served from the memo
    before = type_shell_json(cert_row)
    assert before == to_json_bytes(type_shell(cert_row))

    certs.change_certificate(
        node,
        world.nb1.actor,
        cert["id"],
        CertificateAction.REVISE,
        reason="new model name",
        changes={"model": "Renamed meter"},
    )
    with node.db.read() as conn:
        revised = conn.execute(select(certificates).where(certificates.c.id == cert["id"])).one()
    after = type_shell_json(revised)
    assert after != before and b"Renamed meter" in after
    assert after == to_json_bytes(type_shell(revised))


def test_partial_views_render_the_same_submodels_and_refuse_the_rest(
    node: Node, world: World
) -> None:
    import pytest

    from metrocloud.twin import SUBMODEL_PARTS, ViewLoader, instrument_submodel

    cert = world.certificate(world.nb1, world.man1)
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    with node.db.read() as conn:
        row = conn.execute(select(instruments).where(instruments.c.id == iid)).one()
        full = ViewLoader(conn).instruments([row])[0]
        for name, parts in SUBMODEL_PARTS.items():
            lean = ViewLoader(conn).instruments([row], parts=parts)[0]
            assert to_json_bytes(instrument_submodel(lean, name)) == to_json_bytes(
                instrument_submodel(full, name)
            )
        bare = ViewLoader(conn).instruments([row], parts=frozenset())[0]
    with pytest.raises(ValueError, match="needs view parts"):
        instrument_submodel(bare, "LifeCycle")
