"""Pending expiry: a task still pending `max_wait_s` after submission ends as timeout (AIFlow's
TASK_MAX_WAIT_TIME), leaves its queue, and no worker gets it afterwards; other tasks wait as long as it takes."""

from __future__ import annotations

import pytest
from redis import Redis as SyncRedis
from sqlalchemy import text

from coordinator.config import Settings
from coordinator.service import Coordinator
from tests.helpers import Agent, started, submit_one

pytestmark = pytest.mark.anyio


async def backdate(coordinator: Coordinator, task_id: str, seconds: int) -> None:
    """Make a task look submitted `seconds` ago (instead of sleeping through its max_wait_s)."""
    async with coordinator.core.engine.begin() as conn:
        await conn.execute(text("UPDATE tasks SET created_at = now() - make_interval(secs => :s) WHERE id = :id"),
                           {"s": seconds, "id": task_id})


async def test_a_task_pending_past_max_wait_s_times_out(settings: Settings, clean_db: None,
                                                         redis: SyncRedis) -> None:
    async with started(settings, task_max_wait=600) as coordinator:
        impatient = await submit_one(coordinator, max_wait_s=30)
        by_default = await submit_one(coordinator)
        patient = await submit_one(coordinator, max_wait_s=3600)
        for task_id in (impatient, by_default, patient):
            await backdate(coordinator, task_id, 700)
        assert await coordinator.lifecycle.expire_waiting() == 2
        expired = await coordinator.tasks.get(impatient)  # type: ignore[arg-type]
        assert (expired["status"], expired["end_reason"]) == ("timeout", "timeout")
        assert expired["error"] == "still pending after max_wait_s (30 s): no worker took it in time"
        assert (await coordinator.tasks.get(by_default))["max_wait_s"] == 600  # type: ignore[arg-type]
        agent = await Agent.register(coordinator)
        assert await agent.lease_ids(max_tasks=5) == [patient]
        assert await coordinator.lifecycle.expire_waiting() == 0  # running tasks never expire
