"""task lifecycle: exclusive tasks, the attempt a task waits on, CHECK constraints on the task states

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATES = "'pending', 'running', 'succeeded', 'failed', 'cancelled', 'timeout'"
FINISHED = "'succeeded', 'failed', 'cancelled', 'timeout'"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("exclusive", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("tasks", sa.Column("stopping_attempt_id", sa.Uuid(), nullable=True))
    op.create_index("ix_tasks_stopping", "tasks", ["stopping_attempt_id"],
                    postgresql_where=sa.text("stopping_attempt_id IS NOT NULL"))
    op.create_check_constraint("ck_tasks_status", "tasks", f"status IN ({STATES})")
    op.create_check_constraint("ck_tasks_running_has_attempt", "tasks",
                               "status <> 'running' OR (attempt_id IS NOT NULL AND worker_id IS NOT NULL)")
    op.create_check_constraint("ck_tasks_finished_at", "tasks",
                               f"status NOT IN ({FINISHED}) OR finished_at IS NOT NULL")


def downgrade() -> None:
    for name in ("ck_tasks_finished_at", "ck_tasks_running_has_attempt", "ck_tasks_status"):
        op.drop_constraint(name, "tasks", type_="check")
    op.drop_index("ix_tasks_stopping", table_name="tasks")
    op.drop_column("tasks", "stopping_attempt_id")
    op.drop_column("tasks", "exclusive")
