"""device event logs uploaded to the node

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 09:00:00.000000

One row per record of an instrument's device event log (metrocloud.device.eventlog), as
uploaded by its manufacturer or operator. The rows are the exact canonical lines the device
wrote; an upload only ever appends (a rewritten history is refused), so the stored log is the
longest verified prefix seen by the node.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_event_logs",
        sa.Column("instrument_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", sa.String(length=30), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("uploaded_at", sa.String(length=30), nullable=False),
        sa.Column("uploaded_by", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_device_event_logs_instrument_id_instruments"),
        ),
        sa.PrimaryKeyConstraint("instrument_id", "seq", name=op.f("pk_device_event_logs")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("device_event_logs")
