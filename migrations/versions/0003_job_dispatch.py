"""Nothing lost: who holds a running job, and when its message was last put on the broker.

``owner`` is the claim token of the one execution holding a running job (its Celery task id,
try number and a random part); only that execution may heartbeat or finish the job.
``dispatched_at`` is when the job's latest message is due at a worker (sent now, or the end
of a retry countdown); NULL while no message is known to be out, which is what the sweeper
looks for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    # Jobs already pending when this lands were sent by the code before it: count them as
    # dispatched now, so the sweeper re-sends them only if they stay unclaimed.
    op.execute("UPDATE jobs SET dispatched_at = CURRENT_TIMESTAMP WHERE status = 'pending'")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite needs a table rebuild
        batch.drop_column("dispatched_at")
        batch.drop_column("owner")
