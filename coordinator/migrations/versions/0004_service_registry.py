"""service registry: per-service pause and running limit, changed at run time; a stable integer per service;
tasks' pending expiry (max_wait_s)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 14:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("number", sa.Integer(), sa.Identity(always=False), nullable=False, unique=True),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("max_running IS NULL OR max_running >= 0", name="ck_services_max_running"),
    )
    op.add_column("tasks", sa.Column("max_wait_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "max_wait_s")
    op.drop_table("services")
