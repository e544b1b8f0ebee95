"""Two coordinators on one Redis and one PostgreSQL never hand out a task twice, and hand out every task."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from tests.helpers import Agent, attempt_counts, started, submit
from tests.support.agent import HttpAgent

pytestmark = pytest.mark.anyio

TASKS = 400
LEASERS = 32


async def drain(agent: Agent, batch: int) -> list[str]:
    """Lease until the queues are empty; returns every task id this leaser got."""
    got: list[str] = []
    while leased := await agent.lease_ids(max_tasks=batch):
        got += leased
    return got


def assert_each_handed_out_once(expected: list[str], handed: list[str], attempts: dict[str, int]) -> None:
    """Every task handed out exactly once, and PostgreSQL records exactly one attempt for each."""
    duplicates = [task for task, n in Counter(handed).items() if n > 1]
    assert duplicates == []
    assert sorted(handed) == sorted(expected)
    assert attempts == dict.fromkeys(expected, 1)


async def test_two_coordinators_claiming_concurrently(settings: Settings, coordinator: Coordinator) -> None:
    """32 concurrent leasers spread over two coordinator instances (same prefix) take 400 tasks exactly once."""
    ids = await submit(coordinator, TASKS)
    async with started(settings) as other:
        agents = [await Agent.register(coordinator, hostname=f"node{i}") for i in range(4)]
        combos = list(itertools.product(agents, (coordinator, other), (1, 3, 7, 16)))
        assert len(combos) == LEASERS
        results = await asyncio.gather(*(drain(Agent(service, agent.id, agent.token), batch)
                                         for agent, service, batch in combos))
    handed = [task for got in results for task in got]
    assert_each_handed_out_once(ids, handed, await attempt_counts(coordinator, ids))
    assert sum(1 for got in results if got) > 1  # the work really was spread over several leasers
    assert (await coordinator.stats.task_counts())["by_status"] == {"running": TASKS}


async def test_claims_race_submissions_across_threads(coordinator: Coordinator, api_server: BackgroundServer) -> None:
    """While tasks are being submitted, agents lease from an in-process coordinator and, on another thread,
    over HTTP from a second one; when the dust settles each task was handed out exactly once."""
    local = [await Agent.register(coordinator, hostname=f"local{i}") for i in range(3)]
    submitted: list[str] = []
    done = asyncio.Event()

    async def submitter() -> None:
        for _ in range(20):
            submitted.extend(await submit(coordinator, 10))
            await asyncio.sleep(0)
        done.set()

    async def local_leaser(agent: Agent) -> list[str]:
        got: list[str] = []
        while True:
            finished = done.is_set()
            leased = await agent.lease_ids(max_tasks=4)
            got += leased
            if finished and not leased:
                return got
            await asyncio.sleep(0)

    def http_leaser(index: int) -> list[str]:
        got: list[str] = []
        with httpx.Client(base_url=api_server.url, timeout=30) as client:
            agent = HttpAgent.register(client, hostname=f"remote{index}")
            while True:
                finished = done.is_set()
                leased = [t["task_id"] for t in agent.lease(max_tasks=5)]
                got += leased
                if finished and not leased:
                    return got

    results = await asyncio.gather(submitter(), *(local_leaser(a) for a in local),
                                   *(asyncio.to_thread(http_leaser, i) for i in range(3)))
    handed = [task for got in results[1:] if got for task in got]
    assert len(submitted) == 200
    assert_each_handed_out_once(submitted, handed, await attempt_counts(coordinator, submitted))


async def test_second_instance_sees_the_first_ones_work(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """A task submitted through one instance is leased through the other, and its report is accepted by the first."""
    async with started(settings) as first, started(settings) as second:
        [task] = await submit(first, 1)
        agent = await Agent.register(second)
        [leased] = await agent.lease()
        assert leased["task_id"] == task
        assert await Agent(first, agent.id, agent.token).report(leased, "succeeded", result={"logP": 1.2})
        assert (await second.tasks.get(uuid.UUID(task)))["status"] == "succeeded"
