"""The Alembic history produces exactly the tables the code declares, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from metrocloud.ledger.schema import ledger_state
from metrocloud.ledger.schema import metadata as ledger_metadata
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.schema import metadata as registry_metadata
from metrocloud.store.schema import parties
from tests._pg import PG_URL, fresh_schema
from tests.conftest import DbTarget


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_target(request: pytest.FixtureRequest) -> Iterator[DbTarget]:
    """Empty databases (no template, no pooled schema): these tests run the migrations."""
    if request.param == "sqlite":
        yield DbTarget("sqlite", None, None)
    else:
        with fresh_schema() as schema:
            yield DbTarget("postgresql", PG_URL, schema)


@pytest.fixture
def node(settings: Settings) -> Iterator[Node]:
    """A node whose database the product's migrations create in this test."""
    n = Node.open(settings)
    yield n
    n.db.dispose()


def test_migrated_schema_matches_the_models(node: Node) -> None:
    with node.db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        diff = compare_metadata(ctx, [registry_metadata, ledger_metadata])
    assert diff == []


def test_migration_creates_the_ledger_state_row(node: Node) -> None:
    with node.db.read() as conn:
        assert conn.execute(select(ledger_state.c.tree_size)).scalar_one() == 0


def test_reopening_a_node_keeps_its_identity(node: Node) -> None:
    again = Node.open(node.settings)
    try:
        assert again.node_id == node.node_id
        assert again.key.key_id == node.key.key_id
    finally:
        again.db.dispose()


def test_0002_backfills_declaration_links(settings: Settings) -> None:
    """A database at 0001 with a declaration gets its instrument links on upgrade."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import insert, text

    from metrocloud.store.database import Database
    from metrocloud.store.schema import declaration_instruments

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url(), schema=settings.db_schema)
    cfg = Config()
    cfg.set_main_option("script_location", str(files("metrocloud.store") / "migrations"))
    try:
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        with db.engine.begin() as conn:
            party = {
                "name": "P",
                "role": "manufacturer",
                "country": "DE",
                "admitted_at": "2026-01-01T00:00:00.000Z",
                "leaf_index": 0,
            }
            conn.execute(insert(parties), [{"id": "pty-DE-1", **party}])
            conn.execute(
                text(
                    "INSERT INTO certificates (id, number, notified_body_id, holder_id, module, "
                    "category, model, accuracy_class, software, rated_conditions, issued_on, "
                    "valid_until, status, revision, leaf_index) VALUES ('cer-DE-1', 'N', "
                    "'pty-DE-1', 'pty-DE-1', 'B', 'MI-003', 'M', 'B', '[]', '{}', '2020-01-01', "
                    "'2030-01-01', 'valid', 0, 1)"
                )
            )
            for iid in ("ins-DE-1", "ins-DE-2"):
                conn.execute(
                    text(
                        "INSERT INTO instruments (id, serial, manufacturer_id, certificate_id, "
                        "category, state, event_count, registered_leaf, leaf_index) VALUES "
                        f"('{iid}', '{iid}', 'pty-DE-1', 'cer-DE-1', 'MI-003', 'registered', "
                        "0, 2, 2)"
                    )
                )
            conn.execute(
                text(
                    "INSERT INTO declarations (id, certificate_id, manufacturer_id, module, "
                    "instrument_ids, declared_on, leaf_index) VALUES ('doc-DE-1', 'cer-DE-1', "
                    "'pty-DE-1', 'D', '[\"ins-DE-1\", \"ins-DE-2\"]', '2026-01-01', 3)"
                )
            )
        db.migrate()
        with db.read() as conn:
            links = set(conn.execute(select(declaration_instruments)).all())
        assert links == {("ins-DE-1", "doc-DE-1"), ("ins-DE-2", "doc-DE-1")}
    finally:
        db.dispose()


def test_a_database_at_the_newest_revision_is_not_migrated_again(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a node (every CLI command, every worker) skips Alembic when nothing is due."""
    from alembic import command

    def upgrade(*_: object, **__: object) -> None:
        raise AssertionError("Alembic ran on a database already at the newest revision")

    monkeypatch.setattr(command, "upgrade", upgrade)
    again = Node.open(node.settings)
    again.db.dispose()
    with node.db.write() as conn:  # one revision behind: the next open upgrades it
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    with pytest.raises(AssertionError, match="already at the newest"):
        Node.open(node.settings)


def test_0011_moves_unflushed_wire_lines_into_rounds_and_back(settings: Settings) -> None:
    """A database at 0010 with a planned and an unplanned batch still holding their wire
    lines (and one already flushed): each line becomes a round of its own, in its batch's
    segment; the downgrade gives the wire rows back."""
    from importlib.resources import files

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from metrocloud.ingest.rounds import round_digest, split_round
    from metrocloud.store.database import Database
    from metrocloud.store.schema import intake_batches, intake_rounds

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url(), schema=settings.db_schema)
    cfg = Config()
    cfg.set_main_option("script_location", str(files("metrocloud.store") / "migrations"))
    batch = (
        "INSERT INTO intake_batches (key_id, counter, digest, instrument_id, category, readings, "
        "first_t, last_t, received_at, transport, segment) VALUES ('k', {c}, 'd{c}', 'ins-DE-1', "
        "'MI-003', {n}, 1, 2, '2026-12-01T00:00:00Z', 'http', {s})"
    )
    wires = {1: b"MCB1.flushed", 2: b"MCB1.planned\nwith any byte", 3: b"MCB1.unplanned"}
    try:
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0010")
        with db.engine.begin() as conn:
            for c, segment in ((1, "'intake-1-1'"), (2, "'intake-2-2'"), (3, "NULL")):
                conn.execute(text(batch.format(c=c, n=c * 10, s=segment)))
            for c in (2, 3):
                conn.execute(
                    text("INSERT INTO intake_wire (key_id, counter, wire) VALUES ('k', :c, :w)"),
                    {"c": c, "w": wires[c]},
                )
        db.migrate()
        with db.read() as conn:
            rounds = conn.execute(select(intake_rounds).order_by(intake_rounds.c.id)).all()
            named = conn.execute(
                select(intake_batches.c.counter, intake_batches.c.round_id).order_by(
                    intake_batches.c.id
                )
            ).all()
        assert [(r.format, r.batches, r.readings, r.segment) for r in rounds] == [
            ("wires", 1, 20, "intake-2-2"),
            ("wires", 1, 30, None),
        ]
        assert [split_round(bytes(r.data)) for r in rounds] == [[wires[2]], [wires[3]]]
        assert all(r.digest == round_digest(bytes(r.data)) for r in rounds)
        assert named == [(1, None), (2, rounds[0].id), (3, rounds[1].id)]
        arrow = text(
            "INSERT INTO intake_rounds (batches, readings, format, data, digest) "
            "VALUES (1, 1, 'arrow', :data, 'd')"
        )
        with db.engine.begin() as conn:  # decoded readings have no wire line to give back
            conn.execute(arrow, {"data": b"\x00"})
            cfg.attributes["connection"] = conn
            with pytest.raises(RuntimeError, match="let the node flush them"):
                command.downgrade(cfg, "0010")
            conn.rollback()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0010")
        with db.read() as conn:
            back = conn.execute(text("SELECT counter, wire FROM intake_wire ORDER BY counter"))
            assert [(c, bytes(w)) for c, w in back] == [(2, wires[2]), (3, wires[3])]
    finally:
        db.dispose()
