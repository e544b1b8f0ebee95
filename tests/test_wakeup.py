"""Lease wake-ups: a coordinator wakes its own leases at once, and the others' through the Redis channel."""

from __future__ import annotations

import asyncio

import pytest

from aiddwire import EndReason
from coordinator.config import Settings
from coordinator.service import Coordinator
from tests.helpers import Agent, started, submit_one
from tests.support.waiting import await_until

pytestmark = pytest.mark.anyio


async def test_wake_all_wakes_this_process_without_the_channel(coordinator: Coordinator) -> None:
    """A submission's wake-up reaches this process's waiting leases before (here: without) its message comes
    back from Redis: the listener is stopped, and the lease wakes anyway."""
    await coordinator.core.waker.stop()
    waiting = asyncio.ensure_future(coordinator.core.waker.wait(5.0))
    await asyncio.sleep(0.05)
    await coordinator.core.waker.wake_all()
    await asyncio.wait_for(waiting, 1.0)


async def test_its_own_wake_up_coming_back_does_not_wake_again(coordinator: Coordinator) -> None:
    """The channel's echo of this process's own wake-up is not taken again (its leases are already awake; waking
    them twice costs every idle lease a second claim); another coordinator's wake-up is."""
    waker, redis, channel = coordinator.core.waker, coordinator.core.redis, coordinator.core.keys.wakeup
    waiting = asyncio.ensure_future(waker.wait(5.0))
    await asyncio.sleep(0.05)
    await redis.publish(channel, waker.origin)
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await redis.publish(channel, b"o:another coordinator")
    await asyncio.wait_for(waiting, 1.0)


async def test_a_token_taken_back_is_refused_by_every_coordinator_at_once(coordinator: Coordinator,
                                                                         settings: Settings) -> None:
    """A restarted agent takes its identity back with a new token, or the worker is removed: the other coordinators
    hear of it on the channel and refuse the old token at once, not when their copy (REGISTRATION_CACHE_S) ages."""
    async with started(settings) as other:
        agent = await Agent.register(coordinator, "node-a")
        assert await other.workers.verify_token(agent.id, agent.token)  # its hash now cached there

        async def refused(worker: Agent) -> bool:
            return not await other.workers.verify_token(worker.id, worker.token)
        again = await Agent.register(coordinator, "node-a", worker_id=str(agent.id), worker_token=agent.token)
        assert again.id == agent.id and again.token != agent.token
        await await_until(lambda: refused(agent), 2, "the old token refused by the other coordinator")
        assert await other.workers.verify_token(again.id, again.token)

        await coordinator.workers.mark_offline([again.id], EndReason.WORKER_LOST)
        await coordinator.workers.remove(again.id, "test")
        await await_until(lambda: refused(again), 2, "a removed worker's token refused by the other coordinator")


async def test_a_worker_registering_again_leases_by_its_new_groups_everywhere(coordinator: Coordinator,
                                                                             settings: Settings) -> None:
    """Leases keep a worker's routing facts between calls; one that registers again with other groups is leased
    by its new groups at once, by this coordinator and by the others (the registration's message), and one
    drained meanwhile gets nothing although its facts were kept."""
    async with started(settings) as other:
        agent = await Agent.register(coordinator, "node-g", groups=["old"])
        there = Agent(other, agent.id, agent.token)
        assert await agent.lease() == [] and await there.lease() == []  # its routing facts kept in both
        again = await Agent.register(coordinator, "node-g", groups=["new"], worker_id=str(agent.id),
                                     worker_token=agent.token)
        assert again.id == agent.id
        here_task, there_task = await submit_one(coordinator, group="new"), await submit_one(coordinator, group="new")
        assert await again.lease_ids() == [here_task]

        async def leased_there() -> bool:
            return await Agent(other, again.id, again.token).lease_ids() == [there_task]
        await await_until(leased_there, 2, "the other coordinator leasing by the new groups")

        await submit_one(coordinator, group="new")
        await coordinator.core.redis.hset(coordinator.core.keys.worker(str(again.id)), "status", "draining")
        assert await again.lease() == [] and await Agent(other, again.id, again.token).lease() == []
