"""streaming monitoring: the queue of committed segments not yet taken in

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 10:00:00.000000

The streaming monitor no longer runs inside the lake flusher's commit: the flusher's hook
adds the segment's id to ``stream_queue`` (before the segment's wire rows go), and a
monitor thread takes the queue in commit order, deleting each row in the transaction that
takes its segment in. What the queue holds after a crash or a stop is caught up from the
lake on the next start. A segment that keeps failing is retried with a backoff
(``attempts``, ``next_try_at``) and, after the last try, kept as poisoned (``poisoned_at``,
``error``) instead of being tried for ever. An operational record, not a legal fact.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_queue",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("segment", sa.String(length=200), nullable=False),
        sa.Column("committed_at", sa.String(length=30), nullable=False),
        sa.Column("readings", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.String(length=30), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("poisoned_at", sa.String(length=30), nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_stream_queue")),
        sa.UniqueConstraint("segment", name=op.f("uq_stream_queue_segment")),
    )


def downgrade() -> None:
    op.drop_table("stream_queue")
