"""Lease wake-ups: a coordinator wakes its own leases at once, and the others' through the Redis channel."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.service import Coordinator

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
