"""Sessions gain ``warnings``: what a person should know about the outputs (segments that
never arrived and were left as a gap, ...), a JSON list of sentences; NULL when none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("warnings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:  # SQLite needs a table rebuild
        batch.drop_column("warnings")
