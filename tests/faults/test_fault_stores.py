"""The coordinator killed, Redis flushed or stopped, PostgreSQL restarted — each under load, with hundreds of
tasks in flight and submissions arriving: the system degrades with clear 503s, recovers by itself, and loses
nothing it acknowledged."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from redis.asyncio import Redis

from coordinator.keys import Keys
from coordinator.queue import ClaimRequest, QueueIndex
from tests.faults.cluster import Cluster, Stopwatch
from tests.faults.truth import Figures, Submitter, system_view
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
TASKS = 300
AGENTS = 3
SLOTS = 20
DURATIONS = (1.0, 1.5, 2.0, 6.0)
"""Seconds the load's tasks run: most are short, one in four outlasts an outage (and is fenced by its agent)."""


@contextmanager
def under_load(system: Cluster) -> Iterator[Submitter]:
    """A coordinator, three agents of 20 slots, 300 tasks (1 to 6 s), and 20 more submitted every second for
    as long as the block runs; the fault goes inside it, once 40 tasks run."""
    system.coordinator()
    agents = [system.agent(f"n{i}", SLOTS, wait=False) for i in range(AGENTS)]
    for agent in agents:
        system.worker_id(agent.name)
    durations = itertools.cycle(DURATIONS)
    system.submit([system.task(next(durations)) for _ in range(TASKS)])
    wait_until(lambda: system.running_now() >= 40, 60, "40 tasks to run")
    submitter = Submitter(system.ledger, system.api(), lambda: system.task(next(durations)), per_batch=10,
                          period=0.5)
    submitter.start()
    time.sleep(1.0)
    try:
        yield submitter
        time.sleep(2.0)  # submissions go on a while after the recovery
    finally:
        submitter.finish()


def work_flows(system: Cluster) -> Callable[[], bool]:
    """A probe: true once more tasks have succeeded than when it was made (PostgreSQL reachable again)."""
    before = system.count("succeeded")
    return lambda: system.count("succeeded") > before


def loaded_figures(system: Cluster, scenario: str, detect: float, recover: float, submitter: Submitter) -> Figures:
    system.settle(180)
    return system.figures(scenario, detect, recover,
                          note=f"{submitter.ledger.refused} submissions refused during the fault")


def test_coordinator_killed_under_load(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """kill -9 of the only coordinator with hundreds of tasks in flight, restarted a second later on the same
    port: agents keep their results until it is back, the index is rebuilt, every task ends once."""
    system = cluster()
    with under_load(system) as submitter:
        coordinator = system.coordinators[0]
        coordinator.kill()
        clock = Stopwatch()
        time.sleep(1.0)
        coordinator.start()
        detect = clock.until(lambda: coordinator.health() == 200, 60, "the coordinator to be back")
        recover = clock.until(work_flows(system), 60, "tasks to succeed again")
    figures = loaded_figures(system, "coordinator kill -9 under load", detect, recover, submitter)
    record(figures)
    assert figures.overlap_s == 0
    assert "index rebuilt from PostgreSQL" in coordinator.output.rsplit("--- start", 1)[1]


def claim_in_redis(redis_url: str, prefix: str, worker_id: str, groups: list[str], count: int) -> list[str]:
    """Take `count` tasks in the Redis index for an online worker, as a lease does before its PostgreSQL commit."""
    async def claim() -> list[str]:
        redis, keys = Redis.from_url(redis_url), Keys(prefix)
        try:
            await redis.hset(keys.worker(worker_id), "status", "online")
            claims = await QueueIndex(redis, keys).claim(
                ClaimRequest(worker=worker_id, groups=groups, max_tasks=count),
                [str(uuid.uuid4()) for _ in range(count)])
        finally:
            await redis.aclose()
        return [c.task_id for c in claims]
    return asyncio.run(claim())


def test_coordinator_killed_between_claim_and_commit(cluster: Callable[..., Cluster],
                                                     record: Callable[[Figures], None]) -> None:
    """The coordinator dies after a lease's Redis claim and before its PostgreSQL commit: the tasks look taken in
    Redis but PostgreSQL still has them pending. After the restart the index is rebuilt from PostgreSQL and they
    run, once."""
    system = cluster()
    coordinator = system.coordinator()
    system.submit([system.task(0.2) for _ in range(10)])
    coordinator.kill()
    clock = Stopwatch()
    taken = claim_in_redis(system.stores.redis_url, system.settings["AIDD_KEY_PREFIX"], str(uuid.uuid4()),
                           ["default"], 5)
    assert len(taken) == 5
    tasks, _ = system_view(system.conninfo, taken)
    assert {t["status"] for t in tasks.values()} == {"pending"}  # the commit never happened
    coordinator.start()
    coordinator.wait_ready()
    system.agent("n0", 4)
    seen = clock.times({"detect": lambda: all(system.api().task(i)["attempts"] >= 1 for i in taken),
                        "recover": lambda: all(system.api().task(i)["status"] == "succeeded" for i in taken)}, 60)
    system.settle(60)
    figures = system.figures("coordinator kill -9 between claim and commit", seen["detect"], seen["recover"],
                             note="5 tasks claimed in Redis, never committed")
    record(figures)
    assert figures.outcomes == {"succeeded": 10} and figures.duplicate_executions == 0


def test_redis_flushed_under_load(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """FLUSHALL of Redis under load: the leader sees the index is gone and rebuilds it from PostgreSQL."""
    system = cluster()
    with under_load(system) as submitter:
        built = Keys(system.settings["AIDD_KEY_PREFIX"]).index_built
        flows = work_flows(system)
        system.stores.flushall()
        clock = Stopwatch()
        with system.stores.redis() as redis:
            detect = clock.until(lambda: redis.exists(built), 30, "the index to be rebuilt")
        recover = clock.until(flows, 60, "tasks to succeed again")
    figures = loaded_figures(system, "Redis FLUSHALL under load", detect, recover, submitter)
    record(figures)
    assert figures.overlap_s == 0


def outage(system: Cluster, server: str, seconds: float) -> tuple[float, float, list[str]]:
    """Stop a store for `seconds`, then start it; returns the seconds until the coordinator said so (503 from
    health), until tasks succeeded again after the restart, and the errors submissions got meanwhile."""
    coordinator = system.coordinators[0]
    system.stores.stop_server(server)
    clock = Stopwatch()
    detect = clock.until(lambda: coordinator.health() == 503, 30, f"health to report {server} down")
    errors = []
    api = system.api()
    while clock.elapsed() < seconds:
        response = api.http.post("/api/v1/tasks", json=system.task(1))
        errors.append(f"{response.status_code} {response.json().get('error', '')}")
        time.sleep(0.5)
    system.stores.start_server(server)
    recover = clock.until(work_flows(system), 90, "tasks to succeed again")
    return detect, recover, errors


@pytest.mark.parametrize("server", ["redis", "postgres"])
def test_store_stopped_under_load(cluster: Callable[..., Cluster], record: Callable[[Figures], None],
                                  server: str) -> None:
    """Redis, or PostgreSQL, stopped for 5 s under load and started again: meanwhile every call that needs it
    gets a clear 503 (nothing half-done), agents hold their reports and fence their tasks; afterwards everything
    recovers by itself."""
    system = cluster()
    with under_load(system) as submitter:
        detect, recover, errors = outage(system, server, 5.0)
    figures = loaded_figures(system, f"{'Redis' if server == 'redis' else 'PostgreSQL'} stopped 5 s under load",
                             detect, recover, submitter)
    record(figures)
    assert figures.overlap_s == 0
    assert errors and all(e.startswith("503 Redis or PostgreSQL unavailable") for e in errors), errors
