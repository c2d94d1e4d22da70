"""Enrichment: a session's options, and its transcript, chapters and summary documents.

``sessions.options`` holds what the recorder asked for (``shared.options.SessionOptions``:
enrichment stages, language, LLM on or off); NULL or a missing field means the workers'
settings. ``enrichment_documents`` holds one JSON document per (session, kind): the
transcript, the chapters and the summary (``workers.enrich.documents``), written by the
stage that made it in the transaction that marks its job succeeded, so a document is there
exactly when its stage has succeeded.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("options", sa.JSON(), nullable=True))
    op.create_table(
        "enrichment_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_enrichment_documents_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrichment_documents")),
        sa.UniqueConstraint(
            "session_id", "kind", name=op.f("uq_enrichment_documents_session_id")
        ),
    )
    op.create_index(
        op.f("ix_enrichment_documents_session_id"),
        "enrichment_documents",
        ["session_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_enrichment_documents_session_id"), table_name="enrichment_documents")
    op.drop_table("enrichment_documents")
    with op.batch_alter_table("sessions") as batch:  # SQLite needs a table rebuild
        batch.drop_column("options")
