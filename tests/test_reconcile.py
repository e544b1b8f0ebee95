"""Redis is an index: wiped, drifted or outlived by a restart, it is rebuilt from PostgreSQL and nothing is lost."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis import Redis as SyncRedis
from sqlalchemy import func, update

from coordinator.config import Settings
from coordinator.keys import Keys
from coordinator.models import Task
from coordinator.reconcile import repair_drift
from coordinator.service import Coordinator
from coordinator.states import TaskStatus
from tests.helpers import Agent, Driven, drive_all, drive_to, started, submit_one, wipe_index
from tests.support.waiting import await_until

pytestmark = pytest.mark.anyio

PRIORITIES = [1, 3, 2, 3, 1, 2]


async def queue_in_order(coordinator: Coordinator) -> list[str]:
    """Submit tasks of mixed priority; returns their ids in the order they should be leased."""
    ids = [await submit_one(coordinator, priority=p) for p in PRIORITIES]
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: -PRIORITIES[i])]


async def lease_all_one_by_one(agent: Agent) -> list[str]:
    got: list[str] = []
    while leased := await agent.lease_ids():
        got += leased
    return got


async def running_task(coordinator: Coordinator) -> Driven:
    """A running task whose agent also heartbeats with it."""
    return await drive_to(coordinator, TaskStatus.RUNNING)


async def test_wiped_index_is_rebuilt_by_repair_drift(coordinator: Coordinator, redis: SyncRedis) -> None:
    """After every key of the prefix is deleted, repair_drift rebuilds the queues in the same order and running
    tasks still accept their reports."""
    running = await running_task(coordinator)
    expected = await queue_in_order(coordinator)
    agent = await Agent.register(coordinator)
    assert wipe_index(redis, coordinator.core.keys.prefix) > 0
    assert await agent.lease() == []  # the index is gone: nothing to hand out
    assert await repair_drift(coordinator.core) == len(expected) + 1
    assert await lease_all_one_by_one(agent) == expected
    assert running.leased is not None
    assert await running.agent.report(running.leased, "succeeded", result={"ok": 1})
    assert (await coordinator.tasks.get(uuid.UUID(running.task_id)))["status"] == "succeeded"


async def test_a_timers_tick_notices_a_flush(coordinator: Coordinator, redis: SyncRedis) -> None:
    """The leader's next tick rebuilds a wiped index (noticed by the missing index_built key), without waiting
    for the next periodic drift check."""
    expected = await queue_in_order(coordinator)
    agent = await Agent.register(coordinator)
    await coordinator.timers.tick()  # the periodic drift check has just run
    wipe_index(redis, coordinator.core.keys.prefix)
    await coordinator.timers.tick()
    assert redis.exists(coordinator.core.keys.index_built)
    assert await lease_all_one_by_one(agent) == expected


async def test_the_first_tick_after_a_failed_one_repairs_drift(settings: Settings, clean_db: None,
                                                              redis: SyncRedis) -> None:
    """A tick that fails (here: a key of the index holds a string) gives up the leadership; the first tick that
    leads again repairs the drift, such as a task stored but not queued, without waiting for the reconcile
    interval (an hour here)."""
    async with started(settings, leader_lease=0.3) as coordinator:
        assert await coordinator.timers.guarded_tick()  # the periodic drift check has just run
        lost = await submit_one(coordinator)
        keys = coordinator.core.keys
        redis.zrem(keys.service_queue("admet", "default"), lost)
        redis.zrem(keys.pending, lost)
        redis.set(keys.delayed, "not a sorted set")
        assert not await coordinator.timers.guarded_tick()
        assert coordinator.timers.leader_since is None and redis.get(keys.leader) is None
        redis.delete(keys.delayed)
        await await_until(lambda: leads_after_tick(coordinator), what="the coordinator to lead again")
        assert await (await Agent.register(coordinator)).lease_ids() == [lost]


async def leads_after_tick(coordinator: Coordinator) -> bool:
    """Tick once; whether this coordinator leads now."""
    return await coordinator.timers.guarded_tick() and coordinator.timers.leader_since is not None


async def test_heartbeat_before_the_rebuild_keeps_running_tasks(coordinator: Coordinator, redis: SyncRedis) -> None:
    """A heartbeat that arrives between a flush and the rebuild does not call the worker's tasks stale (which
    would make the agent kill them): PostgreSQL still says they run there."""
    running = await running_task(coordinator)
    wipe_index(redis, coordinator.core.keys.prefix)
    beat = await running.agent.heartbeat(running.task_id)
    assert beat["stale_tasks"] == []
    assert running.leased is not None
    assert await running.agent.report(running.leased, "succeeded")


async def test_drift_both_ways_is_repaired(coordinator: Coordinator, redis: SyncRedis) -> None:
    """A pending task missing from its queue is put back; a task PostgreSQL finished but Redis still queues is
    dropped; repair_drift counts both."""
    lost, finished, fine = [await submit_one(coordinator) for _ in range(3)]
    keys = coordinator.core.keys
    redis.zrem(keys.service_queue("admet", "default"), lost)
    redis.zrem(keys.pending, lost)
    async with coordinator.core.engine.begin() as conn:  # as if the process died between commit and index
        await conn.execute(update(Task).where(Task.id == uuid.UUID(finished)).values(status="cancelled",
                                                                                            finished_at=func.now()))
    assert await repair_drift(coordinator.core) == 2
    assert await repair_drift(coordinator.core) == 0
    agent = await Agent.register(coordinator)
    assert await lease_all_one_by_one(agent) == [lost, fine]


async def test_a_write_landing_during_the_check_is_not_drift(coordinator: Coordinator, redis: SyncRedis,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A task whose index write lands just after the drift check read the index (a transition between its commit
    and its index write, as happens all the time in a busy drain) is neither counted nor warned of as drift: the
    check reads its candidates again before it repairs anything."""
    late = await submit_one(coordinator)
    keys, index = coordinator.core.keys, coordinator.core.index
    redis.zrem(keys.service_queue("admet", "default"), late)
    redis.zrem(keys.pending, late)
    read = index.active_ids

    async def read_then_the_write_lands() -> tuple[set[str], set[str]]:
        ids = await read()
        await coordinator.core.resync([late])  # the index write of the task's transition
        return ids
    monkeypatch.setattr(index, "active_ids", read_then_the_write_lands)
    with caplog.at_level("WARNING", logger="coordinator.reconcile"):
        assert await repair_drift(coordinator.core) == 0
    assert "drift" not in caplog.text
    assert await (await Agent.register(coordinator)).lease_ids() == [late]


async def snapshot(coordinator: Coordinator, tasks: dict[Any, Driven]) -> dict[Any, dict[str, Any]]:
    """The tasks' records (less their pending reason, which changes by itself as a backoff runs out)."""
    views = {k: await coordinator.tasks.get(uuid.UUID(d.task_id)) for k, d in tasks.items()}
    return {k: {name: value for name, value in view.items() if name != "pending_reason"} for k, view in views.items()}


@pytest.mark.parametrize("flushed", [False, True], ids=["redis-kept", "redis-flushed-while-down"])
async def test_restart_with_tasks_in_every_state(settings: Settings, clean_db: None, redis: SyncRedis,
                                                 flushed: bool) -> None:
    """Stop a coordinator and start a new one on the same stores: every task is as it was, pending ones are
    leased, running ones accept their reports, retries still come due, finished ones stay finished."""
    async with started(settings) as first:
        tasks: dict[Any, Driven] = dict(await drive_all(first))
        backing_off = await drive_to(first, TaskStatus.RUNNING, max_retries=2)
        assert backing_off.leased is not None
        assert await backing_off.agent.report(backing_off.leased, "failed", error="exit 1")
        tasks["backing off"] = backing_off
        before = await snapshot(first, tasks)
    if flushed:
        wipe_index(redis, settings.key_prefix)
    async with started(settings) as second:
        assert await snapshot(second, tasks) == before
        agents = {k: Agent(second, d.agent.id, d.agent.token) for k, d in tasks.items()}
        [pending] = await agents[TaskStatus.PENDING].lease()
        assert pending["task_id"] == tasks[TaskStatus.PENDING].task_id
        running = tasks[TaskStatus.RUNNING]
        assert running.leased is not None
        assert (await agents[TaskStatus.RUNNING].heartbeat(running.task_id))["stale_tasks"] == []
        assert await agents[TaskStatus.RUNNING].report(running.leased, "succeeded", result={"after": "restart"})
        for status in (s for s in TaskStatus if s.finished):
            assert await agents[status].lease() == []

        async def retried() -> list[str]:
            await second.timers.tick()
            return await agents["backing off"].lease_ids()
        assert await await_until(retried) == [backing_off.task_id]
        counts = (await second.stats.task_counts())["by_status"]
        assert counts == {"running": 2, "succeeded": 2, "failed": 1, "cancelled": 1, "timeout": 1}


async def test_index_built_marker_uses_the_key_module(coordinator: Coordinator, redis: SyncRedis) -> None:
    """Start-up leaves the marker a FLUSHALL removes, under the test's own prefix."""
    assert redis.exists(Keys(coordinator.core.settings.key_prefix).index_built)
