"""Incremental audio encoding: per-session chunk lock and request counter; probed durations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audio_chunk_state",
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("covered", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", TZ, nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("chunks_encoded", sa.Integer(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            ondelete="CASCADE",
            name="fk_audio_chunk_state_session_id_sessions",
        ),
        sa.PrimaryKeyConstraint("session_id", name="pk_audio_chunk_state"),
    )
    op.add_column("segments", sa.Column("probed_duration", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:  # SQLite needs a table rebuild
        batch.drop_column("probed_duration")
    op.drop_table("audio_chunk_state")
