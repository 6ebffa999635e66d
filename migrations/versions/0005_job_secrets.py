"""job secrets: an endpoint teacher's API key, kept apart from jobs.spec

Revision ID: 0005_job_secrets
Revises: 0004_idempotency_keys
Create Date: 2026-11-30 02:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_job_secrets"
down_revision = "0004_idempotency_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_secrets",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("job_secrets")
