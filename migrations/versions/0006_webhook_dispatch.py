"""Webhook deliveries whose message was lost: when each delivery's task was last sent.

``dispatched_at`` is when the delivery's latest task message went to the broker; NULL while
none is known to be out (the send after the commit failed, or the sender died). The sweeper
(``workers.dispatch``) sends an undelivered delivery with posts left again when it has none
out after the dispatch grace, or when neither a send nor a post happened for the redispatch
window (its retry message was lost).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "webhook_deliveries",
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Deliveries recorded before this were sent by the code before it: count them as sent
    # now, so the sweeper re-sends one only if it then stays unposted.
    op.execute(
        "UPDATE webhook_deliveries SET dispatched_at = CURRENT_TIMESTAMP "
        "WHERE delivered_at IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:  # SQLite needs a table rebuild
        batch.drop_column("dispatched_at")
