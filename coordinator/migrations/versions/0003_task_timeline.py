"""task timeline: operator actions per task, each attempt's retry due time, log lines dropped per attempt

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("task_id", sa.Uuid(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    )
    op.create_index("ix_task_events_task", "task_events", ["task_id", "id"])
    op.add_column("attempts", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("attempts", sa.Column("log_dropped", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("attempts", "log_dropped")
    op.drop_column("attempts", "retry_at")
    op.drop_index("ix_task_events_task", table_name="task_events")
    op.drop_table("task_events")
