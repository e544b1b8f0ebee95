"""The Alembic migrations build exactly the schema the models describe, and re-running them keeps rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.db import async_url, create_engine, migrate
from coordinator.models import Base

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fresh_engine(servers: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    """An engine on a brand-new, empty database (dropped afterwards)."""
    name = f"aidd_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(async_url(servers[1])).set(database="postgres").render_as_string(False))
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(make_url(async_url(servers[1])).set(database=name).render_as_string(False))
    yield engine
    await engine.dispose()
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE "{name}"'))
    await admin.dispose()


def _diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                 Base.metadata))


async def test_migrations_match_models(fresh_engine: AsyncEngine) -> None:
    """After `migrate`, autogenerate finds nothing to add or change."""
    await migrate(fresh_engine)
    async with fresh_engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_migrating_again_keeps_rows(fresh_engine: AsyncEngine) -> None:
    """A second start (migrate again) neither fails nor loses a stored task."""
    await migrate(fresh_engine)
    task_id = uuid.uuid4()
    async with fresh_engine.begin() as conn:
        await conn.execute(text("INSERT INTO tasks (id, service, task_type, name, input_params, priority, \"group\", "
                                "labels, cpu, memory_gb, gpu, gpu_memory_gb, max_retries, timeout_s, retry_on, "
                                "input_files, outputs, submitted_by, status, attempts, retry_count, worker_losses, "
                                "gpus) VALUES (:id, 's', 't', '', '{}', 2, 'default', '[]', 1, 0, 0, 0, 3, 300, "
                                "'[]', '[]', '[]', '', 'pending', 0, 0, 0, '[]')"), {"id": task_id})
    await migrate(fresh_engine)
    async with fresh_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM tasks WHERE id = :id"), {"id": task_id})).scalar() == 1
