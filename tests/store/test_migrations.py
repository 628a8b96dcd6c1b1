"""The Alembic history produces exactly the tables the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from metrocloud.ledger.schema import ledger_state
from metrocloud.ledger.schema import metadata as ledger_metadata
from metrocloud.services.node import Node
from metrocloud.store.schema import metadata as registry_metadata


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
