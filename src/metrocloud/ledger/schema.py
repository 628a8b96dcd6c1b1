"""The ledger's tables (SQLAlchemy Core), on :data:`metadata` for the platform's migrations.

* ``ledger_entries(idx, entry, appended_at)`` — the log entries, ``idx`` 0, 1, 2, ... with no
  gaps; ``appended_at`` in milliseconds since the Unix epoch;
* ``ledger_nodes(id, hash)`` — the hash of EVERY complete perfect subtree, level 0 being the
  leaf hashes. The perfect subtree at ``(level, index)`` covers the leaves
  ``[index * 2**level, (index + 1) * 2**level)`` and is stored under
  ``id = level * 2**48 + index`` (:func:`node_id`); indexes stay below 2**48, so the log holds
  at most 2**48 leaves and the largest id, 48 * 2**48, fits a signed 64-bit integer;
* ``ledger_heads(tree_size, root_hash, timestamp, key_id, signature)`` — signed tree heads;
* ``ledger_state(id = 1, tree_size)`` — ONE row; appends lock it (``SELECT ... FOR UPDATE``),
  which serializes concurrent appends on PostgreSQL.

Ids are ``BIGINT``; on SQLite they are declared ``INTEGER`` so that the primary key is the
rowid (a separate index for a ``BIGINT`` key would halve append throughput). SQLite's INTEGER
is 64-bit, so nothing is lost.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    select,
)

__all__ = [
    "LEVEL_SHIFT",
    "MAX_LEAVES",
    "create_schema",
    "ledger_entries",
    "ledger_heads",
    "ledger_nodes",
    "ledger_state",
    "metadata",
    "node_id",
    "node_key",
]

#: ``ledger_nodes.id = level << LEVEL_SHIFT | index``
LEVEL_SHIFT = 48
#: capacity of one log
MAX_LEAVES = 1 << LEVEL_SHIFT

metadata = MetaData()

_ID = BigInteger().with_variant(Integer(), "sqlite")

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("idx", _ID, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("appended_at", BigInteger, nullable=False, comment="ms since the Unix epoch"),
    comment="RFC 9162 log entries, idx 0..tree_size-1",
)

ledger_nodes = Table(
    "ledger_nodes",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=False, comment="level * 2**48 + index"),
    Column("hash", LargeBinary(32), nullable=False),
    comment="hash of every complete perfect subtree; level 0 = leaf hashes",
)

ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("tree_size", _ID, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("timestamp", BigInteger, nullable=False, comment="ms since the Unix epoch"),
    Column("key_id", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    comment="signed tree heads",
)

ledger_state = Table(
    "ledger_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tree_size", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="ledger_state_single_row"),
    comment="the single row appends lock",
)


def node_id(level: int, index: int) -> int:
    """``ledger_nodes.id`` of the perfect subtree ``(level, index)``."""
    return level << LEVEL_SHIFT | index


def node_key(id_: int) -> tuple[int, int]:
    """``(level, index)`` of a ``ledger_nodes.id``."""
    return id_ >> LEVEL_SHIFT, id_ & (MAX_LEAVES - 1)


def create_schema(conn: Connection) -> None:
    """Create the ledger tables if missing and the ``ledger_state`` row (tests, tools).

    Production databases get the tables from the platform's Alembic migrations, which must
    also insert ``ledger_state(id=1, tree_size=0)``; :meth:`TransparencyLog.append` inserts
    the row itself if missing, but only a pre-existing row serializes the very first appends.
    """
    metadata.create_all(conn)
    if conn.execute(select(ledger_state.c.id).where(ledger_state.c.id == 1)).first() is None:
        conn.execute(ledger_state.insert().values(id=1, tree_size=0))
