"""the intake's wire lines in their own table

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:20:00.000000

Accepted batches kept their wire line in ``intake_batches.wire`` until the lake flusher set
it to NULL. On SQLite the space of a shrunk row is not reused by the rows appended after it,
so the intake log grew by the whole wire volume (about 1.8 kB per 96-reading batch) for
good. The wire lines now live in ``intake_wire`` (key, counter, wire) only until their
segment is in the lake, and are deleted then: the freed pages are reused, and what stays per
batch is its record (a few hundred bytes). Lines not yet flushed are moved over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_wire",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("wire", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "counter", name=op.f("pk_intake_wire")),
    )
    op.execute(
        "INSERT INTO intake_wire (key_id, counter, wire) "
        "SELECT key_id, counter, wire FROM intake_batches WHERE wire IS NOT NULL"
    )
    with op.batch_alter_table("intake_batches", schema=None) as batch_op:
        batch_op.drop_column("wire")


def downgrade() -> None:
    with op.batch_alter_table("intake_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wire", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE intake_batches SET wire = (SELECT w.wire FROM intake_wire w "
        "WHERE w.key_id = intake_batches.key_id AND w.counter = intake_batches.counter)"
    )
    op.drop_table("intake_wire")
