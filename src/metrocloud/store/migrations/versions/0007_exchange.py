"""confidential exchange: party encryption keys, routed documents, recipients and receipts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 12:00:00.000000

``party_encryption_keys`` is a registry view of the ``party.encryption_key`` statements (a
party's X25519 key for HPKE with the binding it signed). ``exchange_messages`` and
``exchange_recipients`` are operational records of the documents the node routes: the signed
envelope (header, sealed keys, signature; never a plaintext byte or a key), the digest of the
ciphertext file kept under DATA_DIR/exchange, and per recipient the delivery, the first
download and the signed receipt (docs/exchange.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.String(length=40)


def upgrade() -> None:
    op.create_table(
        "party_encryption_keys",
        sa.Column("party_id", _ID, nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=44), nullable=False),
        sa.Column("created_at", sa.String(length=30), nullable=False),
        sa.Column("binding", sa.Text(), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["party_id"], ["parties.id"], name=op.f("fk_party_encryption_keys_party_id_parties")
        ),
        sa.PrimaryKeyConstraint("party_id", "key_id", name=op.f("pk_party_encryption_keys")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "exchange_messages",
        sa.Column("id", _ID, nullable=False),
        sa.Column("sender_id", _ID, nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("header_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("ciphertext_size", sa.BigInteger(), nullable=False),
        sa.Column("stored_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=30), nullable=False),
        sa.Column("received_at", sa.String(length=30), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_messages")),
    )
    op.create_index(
        "ix_exchange_messages_sender_id", "exchange_messages", ["sender_id", "id"], unique=False
    )
    op.create_table(
        "exchange_recipients",
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("recipient_id", _ID, nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=False),
        sa.Column("fetched_at", sa.String(length=30), nullable=True),
        sa.Column("receipt", sa.Text(), nullable=True),
        sa.Column("acknowledged_at", sa.String(length=30), nullable=True),
        sa.Column("receipt_leaf", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["exchange_messages.id"],
            name=op.f("fk_exchange_recipients_message_id_exchange_messages"),
        ),
        sa.PrimaryKeyConstraint("message_id", "recipient_id", name=op.f("pk_exchange_recipients")),
    )
    op.create_index(
        "ix_exchange_recipients_recipient_id",
        "exchange_recipients",
        ["recipient_id", "message_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_exchange_recipients_recipient_id", table_name="exchange_recipients")
    op.drop_table("exchange_recipients")
    op.drop_index("ix_exchange_messages_sender_id", table_name="exchange_messages")
    op.drop_table("exchange_messages")
    op.drop_table("party_encryption_keys")
