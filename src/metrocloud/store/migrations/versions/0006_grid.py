"""Legal Metrology Grid: node identities, replication, outbox, witnessing, alerts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:00:00.000000

Registry views of the log (rebuilt by ``metrocloud audit``): the grid trust anchor a node
pinned (``grid_anchors``), the admitted nodes including the node itself (``grid_nodes``), the
statements replicated from other nodes (``grid_replicated``) and the EU-wide alert board
(``alerts``: market-surveillance alerts, non-compliance notices of other nodes, split views).

Operational records of the node-to-node link: the nonces seen (replay protection), the durable
outbox and the receiver's inbox (idempotency by message id), the traffic log, the peers' link
status, the tree heads witnessed and the cosignatures made and received.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_AUTO = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "grid_anchors",
        sa.Column("anchor_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("anchor_id", name=op.f("pk_grid_anchors")),
    )
    op.create_table(
        "grid_nodes",
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("base_url", sa.String(length=300), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("anchor_id", sa.String(length=64), nullable=False),
        sa.Column("admission", sa.Text(), nullable=False),
        sa.Column("is_self", sa.Boolean(), nullable=False),
        sa.Column("admitted_at", sa.String(length=30), nullable=False),
        sa.Column("removed_leaf", sa.BigInteger(), nullable=True),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["anchor_id"],
            ["grid_anchors.anchor_id"],
            name=op.f("fk_grid_nodes_anchor_id_grid_anchors"),
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_grid_nodes")),
        sa.UniqueConstraint("key_id", name=op.f("uq_grid_nodes_key_id")),
    )
    op.create_table(
        "grid_replicated",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("origin_node_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_grid_replicated")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("origin_node_id", sa.String(length=40), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("raised_by", sa.String(length=40), nullable=False),
        sa.Column("raised_at", sa.String(length=30), nullable=False),
        sa.Column("subject_type", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=80), nullable=False),
        sa.Column("severity", sa.String(length=12), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("leaf_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_subject_id", ["subject_id", "id"], unique=False)
        batch_op.create_index("ix_alerts_kind_id", ["kind", "id"], unique=False)

    op.create_table(
        "grid_nonces",
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "nonce", name=op.f("pk_grid_nonces")),
    )
    with op.batch_alter_table("grid_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_grid_nonces_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "grid_outbox",
        sa.Column("id", _AUTO, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("peer_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.String(length=30), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_outbox")),
        sa.UniqueConstraint("message_id", "peer_id", name="uq_grid_outbox_message_peer"),
    )
    with op.batch_alter_table("grid_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_grid_outbox_peer_status", ["peer_id", "status", "id"], unique=False
        )

    op.create_table(
        "grid_inbox",
        sa.Column("sender_id", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("received_at", sa.String(length=30), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sender_id", "message_id", name=op.f("pk_grid_inbox")),
    )
    op.create_table(
        "grid_traffic",
        sa.Column("id", _AUTO, autoincrement=True, nullable=False),
        sa.Column("at", sa.String(length=30), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("peer_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("request_bytes", sa.Integer(), nullable=False),
        sa.Column("response_bytes", sa.Integer(), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_traffic")),
    )
    with op.batch_alter_table("grid_traffic", schema=None) as batch_op:
        batch_op.create_index("ix_grid_traffic_peer_id", ["peer_id", "id"], unique=False)

    op.create_table(
        "grid_peer_status",
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("last_contact_at", sa.String(length=30), nullable=True),
        sa.Column("last_delivery_at", sa.String(length=30), nullable=True),
        sa.Column("last_error_at", sa.String(length=30), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_grid_peer_status")),
    )
    op.create_table(
        "grid_heads",
        sa.Column("origin_id", sa.String(length=40), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("observed_by", sa.String(length=40), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("observed_at", sa.String(length=30), nullable=False),
        sa.PrimaryKeyConstraint(
            "origin_id", "tree_size", "root_hash", "observed_by", name=op.f("pk_grid_heads")
        ),
    )
    op.create_table(
        "grid_cosignatures",
        sa.Column("origin_id", sa.String(length=40), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("witness_id", sa.String(length=40), nullable=False),
        sa.Column("cosignature", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.String(length=30), nullable=False),
        sa.PrimaryKeyConstraint(
            "origin_id",
            "tree_size",
            "root_hash",
            "witness_id",
            name=op.f("pk_grid_cosignatures"),
        ),
    )


def downgrade() -> None:
    op.drop_table("grid_cosignatures")
    op.drop_table("grid_heads")
    op.drop_table("grid_peer_status")
    with op.batch_alter_table("grid_traffic", schema=None) as batch_op:
        batch_op.drop_index("ix_grid_traffic_peer_id")
    op.drop_table("grid_traffic")
    op.drop_table("grid_inbox")
    with op.batch_alter_table("grid_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_grid_outbox_peer_status")
    op.drop_table("grid_outbox")
    with op.batch_alter_table("grid_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_grid_nonces_expires_at")
    op.drop_table("grid_nonces")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_kind_id")
        batch_op.drop_index("ix_alerts_subject_id")
    op.drop_table("alerts")
    op.drop_table("grid_replicated")
    op.drop_table("grid_nodes")
    op.drop_table("grid_anchors")
