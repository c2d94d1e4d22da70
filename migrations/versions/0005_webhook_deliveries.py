"""Completion webhooks: one delivery per (session, event), recorded with the state change.

A row is written in the transaction that makes a session playable, complete or failed,
when a webhook URL is configured; its task posts it and records the outcome (attempts,
the last error, when it was delivered). ``idempotency_key`` is what the receiver uses to
drop a repeated delivery.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(160), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TZ, nullable=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_webhook_deliveries_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("session_id", "event", name=op.f("uq_webhook_deliveries_session_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_webhook_deliveries_idempotency_key")),
    )  # fmt: skip
    op.create_index(
        op.f("ix_webhook_deliveries_session_id"), "webhook_deliveries", ["session_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_deliveries_session_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
