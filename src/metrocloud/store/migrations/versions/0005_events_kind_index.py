"""events by kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:00:00.000000

An index of the life-cycle events by kind, instrument and sequence number. Market
surveillance asks fleet-wide questions by kind (every tamper event, every non-compliance
without a later corrective action, the operators' histories); with this index each is a
range scan of the kinds asked for instead of a scan of every event of every instrument.
No table: lot decisions and inspection-plan commitments live in the ledger only.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_events_kind_instrument_id",
        "events",
        ["kind", "instrument_id", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_events_kind_instrument_id", table_name="events")
