"""leases and outbox: the wake-up mark on jobs, and an index for the reconciler's lease sweep

Revision ID: 0002_leases_outbox
Revises: 0001
Create Date: 2026-11-29 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_leases_outbox"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wakeup_sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_jobs_status_lease_expires_at", ["status", "lease_expires_at"], unique=False)
    # Jobs queued before this revision had their message sent (or lost): leave them NULL so the
    # reconciler sends a wake-up for each once; the claim is idempotent.


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_lease_expires_at")
        batch_op.drop_column("wakeup_sent_at")
