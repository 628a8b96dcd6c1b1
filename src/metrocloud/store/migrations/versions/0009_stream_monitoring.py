"""streaming monitoring: per-register state, alerts and the segments taken in

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:00:00.000000

The streaming monitor (``metrocloud.services.streaming``) looks at each segment of readings
the lake flusher commits. ``stream_state`` holds the newest reading of each register it saw
(so that a restart continues where it stopped), ``stream_alerts`` one alert per instrument
and kind, ``stream_segments`` the segments already taken in (a segment written again after
a crash is not counted twice). All three are operational records, not legal facts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_state",
        sa.Column("instrument", sa.String(length=40), nullable=False),
        sa.Column("quantity", sa.String(length=64), nullable=False),
        sa.Column("last_t", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("instrument", "quantity", name=op.f("pk_stream_state")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stream_alerts",
        sa.Column("instrument", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=12), nullable=False),
        sa.Column("at", sa.String(length=30), nullable=False),
        sa.Column("last_at", sa.String(length=30), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("raised_at", sa.String(length=30), nullable=False),
        sa.Column("updated_at", sa.String(length=30), nullable=False),
        sa.Column("segment", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("instrument", "kind", name=op.f("pk_stream_alerts")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stream_segments",
        sa.Column("segment", sa.String(length=200), nullable=False),
        sa.Column("readings", sa.BigInteger(), nullable=False),
        sa.Column("late", sa.BigInteger(), nullable=False),
        sa.Column("alerts", sa.Integer(), nullable=False),
        sa.Column("observed_at", sa.String(length=30), nullable=False),
        sa.PrimaryKeyConstraint("segment", name=op.f("pk_stream_segments")),
    )


def downgrade() -> None:
    op.drop_table("stream_segments")
    op.drop_table("stream_alerts")
    op.drop_table("stream_state")
