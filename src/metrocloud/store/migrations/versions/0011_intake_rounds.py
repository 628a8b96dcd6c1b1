"""intake rounds: one row per intake transaction; the batch records indexed in time order

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 07:00:00.000000

Accepted batches kept their wire line in ``intake_wire`` (key, counter, wire), one row per
batch, until the lake flusher had them in the lake, where it decoded them again. For
batches of one reading that row, its random primary key and its deletion cost as much as
the batch's record itself. What one intake transaction accepted now lives in one
``intake_rounds`` row (``metrocloud.ingest.rounds``: the readings decoded, as Arrow, or
for imported OCMF records the exact wire lines, each after its length; each batch names its
round in ``intake_batches.round_id``), planned into a lake segment and deleted as a whole.
Lines not yet flushed are moved over as ``wires`` rounds, one per batch, each in the
segment its batch was planned in.

The batch records' unique index on (key id, counter), which every accepted batch extended at
a random page, is replaced by an index on (first reading time, key id, counter): a replay is
the same payload, so it is found by it, and new batches land at the index's end. A key's
counters stay unique by the intake's decision (in the write transaction, against
``device_counters``); imported OCMF records keep a unique index of their own (counters
below 0).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _join(lines: list[bytes]) -> bytes:
    """A ``wires`` round's bytes: each line after its length, 4 bytes big-endian (as
    ``metrocloud.ingest.rounds.join_round`` writes them, copied so that this revision stays
    as it is when the code moves on)."""
    return b"".join(len(line).to_bytes(4, "big") + line for line in lines)


def _split(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        out.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def upgrade() -> None:
    op.create_table(
        "intake_rounds",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("readings", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_rounds")),
        sqlite_autoincrement=True,  # an id is never used again (batches name their round)
    )
    with op.batch_alter_table("intake_rounds", schema=None) as batch_op:
        batch_op.create_index("ix_intake_rounds_segment", ["segment", "id"], unique=False)
    with op.batch_alter_table("intake_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round_id", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_intake_batches_round_id", ["round_id"], unique=False)
        # the batches' lookup index in time order (inserts at its end, not at random)
        batch_op.drop_constraint("uq_intake_batches_key_counter", type_="unique")
        batch_op.create_index(
            "ix_intake_batches_first_t", ["first_t", "key_id", "counter"], unique=False
        )
        batch_op.create_index(
            "uq_intake_batches_imported",
            ["key_id", "counter"],
            unique=True,
            sqlite_where=sa.text("counter < 0"),
            postgresql_where=sa.text("counter < 0"),
        )
    conn = op.get_bind()
    rounds = sa.table(
        "intake_rounds",
        sa.column("id", sa.BigInteger()),
        sa.column("batches", sa.Integer()),
        sa.column("readings", sa.BigInteger()),
        sa.column("format", sa.String()),
        sa.column("data", sa.LargeBinary()),
        sa.column("digest", sa.String()),
        sa.column("segment", sa.String()),
    )
    pending = conn.execute(
        sa.text(
            "SELECT b.id, b.readings, b.segment, w.wire FROM intake_wire w JOIN intake_batches b "
            "ON b.key_id = w.key_id AND b.counter = w.counter ORDER BY b.id"
        )
    ).all()
    for batch_id, readings, segment, wire in pending:
        data = _join([bytes(wire).strip()])
        round_id = conn.execute(
            rounds.insert()
            .values(
                batches=1,
                readings=readings,
                format="wires",
                data=data,
                digest=hashlib.sha256(data).hexdigest(),
                segment=segment,
            )
            .returning(rounds.c.id)
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE intake_batches SET round_id = :r WHERE id = :b"),
            {"r": round_id, "b": batch_id},
        )
    op.drop_table("intake_wire")


def downgrade() -> None:
    op.create_table(
        "intake_wire",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("wire", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "counter", name=op.f("pk_intake_wire")),
    )
    conn = op.get_bind()
    # an "arrow" round holds decoded readings, no wire lines: downgrade only with the lake
    # flushed (every round in it)
    arrow = conn.execute(sa.text("SELECT count(*) FROM intake_rounds WHERE format <> 'wires'"))
    if arrow.scalar_one():
        raise RuntimeError(
            "intake rounds of decoded readings are waiting for the lake: let the node flush "
            "them (stop it cleanly) before downgrading below 0011"
        )
    for round_id, wires in conn.execute(
        sa.text("SELECT id, data FROM intake_rounds ORDER BY id")
    ).all():
        lines = _split(bytes(wires))
        batches = conn.execute(
            sa.text("SELECT key_id, counter FROM intake_batches WHERE round_id = :r ORDER BY id"),
            {"r": round_id},
        ).all()
        for (key_id, counter), line in zip(batches, lines, strict=True):
            conn.execute(
                sa.text("INSERT INTO intake_wire (key_id, counter, wire) VALUES (:k, :c, :w)"),
                {"k": key_id, "c": counter, "w": line},
            )
    with op.batch_alter_table("intake_batches", schema=None) as batch_op:
        batch_op.drop_index("uq_intake_batches_imported")
        batch_op.drop_index("ix_intake_batches_first_t")
        batch_op.create_unique_constraint("uq_intake_batches_key_counter", ["key_id", "counter"])
        batch_op.drop_index("ix_intake_batches_round_id")
        batch_op.drop_column("round_id")
    with op.batch_alter_table("intake_rounds", schema=None) as batch_op:
        batch_op.drop_index("ix_intake_rounds_segment")
    op.drop_table("intake_rounds")
