"""pending reasons over time: a row each time the reason of a queue shape changes (a task's timeline reads them)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_reason_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("shape_key", sa.Text(), nullable=False),
        sa.Column("code", sa.String(20), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pending_reason_changes_shape", "pending_reason_changes", ["shape_key", "at"])


def downgrade() -> None:
    op.drop_index("ix_pending_reason_changes_shape", table_name="pending_reason_changes")
    op.drop_table("pending_reason_changes")
