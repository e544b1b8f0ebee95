"""A big submission reaches Redis in bounded script calls (Redis is held briefly), each task queued exactly once;
a crash between two calls loses nothing: the drift check queues what PostgreSQL has but Redis lacks. Big leases,
finishes, promotions and rebuilds go in bounded calls too."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest
from redis import Redis as SyncRedis
from redis.exceptions import ResponseError

from coordinator.keys import Keys
from coordinator.queue import CLAIM_CHUNK, FINISH_CHUNK, PUT_CHUNK, ClaimRequest, QueuedTask, RunningTask, now_ms
from coordinator.reconcile import repair_drift
from coordinator.schemas import TaskSpec
from coordinator.service import Coordinator
from tests.helpers import Agent, submit
from tests.support.tasks import task_body

pytestmark = pytest.mark.anyio

TASKS = 5000


@pytest.fixture
def slow_log(redis: SyncRedis) -> Iterator[SyncRedis]:
    """The server's slow log recording every command (the session's Redis is shared: settings put back after)."""
    before = redis.config_get("slowlog-*")
    redis.config_set("slowlog-log-slower-than", 0)
    redis.config_set("slowlog-max-len", 100_000)
    redis.slowlog_reset()
    yield redis
    for name, value in before.items():
        redis.config_set(name, value)
    redis.slowlog_reset()


def script_calls(redis: SyncRedis, sha: str) -> int:
    """How many times the slow log saw the script run (every command is logged: see `slow_log`)."""
    return sum(e["command"].startswith(b"EVALSHA " + sha.encode()) for e in redis.slowlog_get(100_000))


def queued_ids(redis: SyncRedis, keys: Keys) -> list[str]:
    """Every id in the service queue of `admet` and in the pending set (one entry per id in each, by design)."""
    return [m.decode() for key in (keys.service_queue("admet", "default"), keys.pending)
            for m in redis.zrange(key, 0, -1)]


async def test_a_big_submission_goes_to_redis_in_bounded_calls(coordinator: Coordinator,
                                                               slow_log: SyncRedis) -> None:
    """5 000 tasks: ceil(5000 / PUT_CHUNK) put_pending calls, each task in its queue and the pending set once."""
    script = coordinator.core.index._put_pending.sha
    assert slow_log.script_load(coordinator.core.index._put_pending.script) == script  # no NOSCRIPT try logged
    slow_log.slowlog_reset()
    ids = await submit(coordinator, TASKS)
    assert script_calls(slow_log, script) == math.ceil(TASKS / PUT_CHUNK)
    queued = queued_ids(slow_log, coordinator.core.keys)
    assert sorted(queued) == sorted(ids * 2)
    assert (await coordinator.core.index.room([TaskSpec.model_validate(task_body())])).pending == {"admet": TASKS}


async def test_a_crash_between_calls_loses_nothing(coordinator: Coordinator, redis: SyncRedis) -> None:
    """Tasks committed to PostgreSQL whose later chunks never reached Redis are queued by the drift check, in
    submission order, and no task twice."""
    ids = await submit(coordinator, 3 * PUT_CHUNK)
    keys = coordinator.core.keys
    lost = ids[PUT_CHUNK:]  # as if the process died after the first script call
    for task_id in lost:
        redis.delete(keys.task(task_id))
    redis.zrem(keys.service_queue("admet", "default"), *lost)
    redis.zrem(keys.pending, *lost)
    assert await repair_drift(coordinator.core) == len(lost)
    assert sorted(queued_ids(redis, keys)) == sorted(ids * 2)
    agent = await Agent.register(coordinator)
    leased = [i for _ in range(3) for i in await agent.lease_ids(max_tasks=PUT_CHUNK)]
    assert leased == ids


async def test_many_finished_at_once_go_in_bounded_calls(coordinator: Coordinator, slow_log: SyncRedis) -> None:
    """Finishing 250 tasks takes ceil(250 / FINISH_CHUNK) script calls, leaves none queued and counts each once."""
    ids = await submit(coordinator, 250)
    index = coordinator.core.index
    assert slow_log.script_load(index._finish.script) == index._finish.sha
    slow_log.slowlog_reset()
    assert await index.finish("cancelled", ids) == 250
    assert script_calls(slow_log, index._finish.sha) == math.ceil(250 / FINISH_CHUNK)
    assert queued_ids(slow_log, coordinator.core.keys) == []
    assert int(slow_log.hget(coordinator.core.keys.counters, "cancelled") or 0) == 250


async def test_a_big_lease_claims_in_bounded_calls(coordinator: Coordinator, slow_log: SyncRedis) -> None:
    """A lease of 250 takes ceil(250 / CLAIM_CHUNK) claim calls and hands out every task once, in queue order, up
    to what the worker has free (the CPU left by one call is where the next starts)."""
    ids = await submit(coordinator, 250)
    index = coordinator.core.index
    assert slow_log.script_load(index._claim.script) == index._claim.sha
    agent = await Agent.register(coordinator, cpu_cores=1000)
    slow_log.slowlog_reset()
    assert await agent.lease_ids(max_tasks=250) == ids
    assert script_calls(slow_log, index._claim.sha) == math.ceil(250 / CLAIM_CHUNK)
    assert queued_ids(slow_log, coordinator.core.keys) == []
    more = await submit(coordinator, 250)
    assert await agent.lease_ids(max_tasks=250, cpu=CLAIM_CHUNK + 2.5) == more[:CLAIM_CHUNK + 2]


async def test_promotions_and_rebuilds_go_in_bounded_calls(coordinator: Coordinator, slow_log: SyncRedis) -> None:
    """250 retries due at once move in calls of PUT_CHUNK, no more than the tick's limit; a rebuild puts 250 running
    tasks in calls of PUT_CHUNK."""
    index, keys = coordinator.core.index, coordinator.core.keys
    due = now_ms() + 200
    await index.put_pending([QueuedTask(f"d{i}", "admet", "default", 2, i, due_ms=due) for i in range(250)])
    assert slow_log.zcard(keys.delayed) == 250
    await asyncio.sleep(0.25)
    for script in (index._promote, index._put_running):
        assert slow_log.script_load(script.script) == script.sha
    slow_log.slowlog_reset()
    assert await index.promote_due(limit=150) == 150
    assert await index.promote_due() == 100
    assert script_calls(slow_log, index._promote.sha) == 2 + 2  # the second stops at a call that moved 50
    assert slow_log.zcard(keys.delayed) == 0
    assert slow_log.zcard(keys.pending) == 250
    assert await index.put_running([RunningTask(f"r{i}", "admet", "default", "w", f"a{i}") for i in range(250)]) == 250
    assert script_calls(slow_log, index._put_running.sha) == math.ceil(250 / PUT_CHUNK)
    assert slow_log.scard(keys.running) == 250


async def test_a_claim_call_that_fails_gives_back_what_the_earlier_calls_took(coordinator: Coordinator,
                                                                               redis: SyncRedis) -> None:
    """The second claim call of a lease fails (here: no attempt ids left for it, a script error): the tasks the
    first call took are back in their queue at once, in order, not left claimed until a drift check."""
    ids = await submit(coordinator, CLAIM_CHUNK + 5)
    keys, index = coordinator.core.keys, coordinator.core.index
    redis.hset(keys.worker("w"), "status", "online")
    with pytest.raises(ResponseError):
        await index.claim(ClaimRequest(worker="w", groups=["default"], max_tasks=CLAIM_CHUNK + 5),
                          [f"a{i}" for i in range(CLAIM_CHUNK)])
    assert redis.scard(keys.worker_tasks("w")) == 0 and redis.scard(keys.running) == 0
    assert [m.decode() for m in redis.zrange(keys.service_queue("admet", "default"), 0, -1)] == ids
