"""Attempts end for a reason and tasks retry (or not) accordingly; timers reap, time out and lead one at a time."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from coordinator.beats import RECHECK_S
from coordinator.config import Settings
from coordinator.lifecycle import START
from coordinator.schemas import Heartbeat, WorkerCommandSpec
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from coordinator.states import Action
from tests.faults.link import Link
from tests.helpers import Agent, started, submit, submit_one
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body
from tests.support.waiting import await_until

pytestmark = pytest.mark.anyio


async def task(coordinator: Coordinator, task_id: str) -> dict[str, Any]:
    """The task as the API shows it, with its attempt history."""
    return await coordinator.tasks.get(uuid.UUID(task_id))


async def lease_when_due(coordinator: Coordinator, agent: Agent, timeout: float = 15.0) -> dict[str, Any]:
    """Tick the timers (which promote due retries) and heartbeat and lease until the agent gets a task."""
    async def attempt() -> dict[str, Any] | None:
        await agent.heartbeat()
        await coordinator.timers.tick()
        leased = await agent.lease()
        return leased[0] if leased else None
    return await await_until(attempt, timeout=timeout, what="a task to come due")


async def test_backoff_doubles_until_retries_run_out(coordinator: Coordinator) -> None:
    """Failed attempts wait base * 2**(n-1) before running again (0.2, 0.4, 0.8 s); after max_retries: failed."""
    task_id = await submit_one(coordinator, max_retries=3)
    agent = await Agent.register(coordinator)
    failed_at = 0.0
    for n in (1, 2, 3, 4):
        leased = await lease_when_due(coordinator, agent)
        waited = time.time() - failed_at
        assert n == 1 or waited >= 0.2 * 2 ** (n - 2) - 0.005  # never leased before it was due
        assert (leased["task_id"], leased["attempt"]) == (task_id, n)
        failed_at = time.time()
        assert await agent.report(leased, "failed", error=f"exit 1 (try {n})", exit_code=1)
        view = await task(coordinator, task_id)
        if n == 4:
            break
        assert (view["status"], view["retry_count"]) == ("pending", n)
        delay = view["available_at"] - view["attempt_history"][-1]["ended_at"]
        assert delay.total_seconds() == pytest.approx(0.2 * 2 ** (n - 1), abs=0.002)
        assert await agent.lease() == []  # backing off: not in the queue until a timer promotes it
    assert (view["status"], view["retry_count"], view["error"]) == ("failed", 3, "exit 1 (try 4)")
    assert [a["end_reason"] for a in view["attempt_history"]] == ["error"] * 4
    assert [a["exit_code"] for a in view["attempt_history"]] == [1] * 4


async def test_backoff_is_capped(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """With base 0.3 s and cap 0.5 s the second retry waits 0.5 s, not 0.6 s."""
    async with started(settings, retry_base_delay=0.3, retry_max_delay=0.5) as coordinator:
        task_id = await submit_one(coordinator, max_retries=5)
        agent = await Agent.register(coordinator)
        for expected in (0.3, 0.5):
            leased = await lease_when_due(coordinator, agent)
            assert await agent.report(leased, "failed", error="exit 1")
            view = await task(coordinator, task_id)
            delay = view["available_at"] - view["attempt_history"][-1]["ended_at"]
            assert delay.total_seconds() == pytest.approx(expected, abs=0.002)


@pytest.mark.parametrize(("retry_on", "reason", "final"), [
    (["timeout"], "error", "failed"),
    (["error"], "timeout", "timeout"),
    ([], "error", "failed"),
    (["error", "timeout", "worker_lost"], "permanent", "failed"),
])
async def test_reasons_outside_retry_on_end_the_task(coordinator: Coordinator, retry_on: list[str], reason: str,
                                                     final: str) -> None:
    """An attempt that ends for a reason the task does not retry on (or `permanent`) ends the task at once."""
    task_id = await submit_one(coordinator, retry_on=retry_on, max_retries=5)
    agent = await Agent.register(coordinator)
    [leased] = await agent.lease()
    assert await agent.report(leased, "failed", reason=reason, error="no luck")
    view = await task(coordinator, task_id)
    assert (view["status"], view["end_reason"], view["retry_count"]) == (final, reason, 0)
    assert view["finished_at"] is not None


async def test_retry_on_a_listed_reason(coordinator: Coordinator) -> None:
    """A task that lists `timeout` in retry_on goes back to pending after an attempt that timed out."""
    task_id = await submit_one(coordinator, retry_on=["timeout"], max_retries=1)
    agent = await Agent.register(coordinator)
    [leased] = await agent.lease()
    assert await agent.report(leased, "failed", reason="timeout")
    assert (await task(coordinator, task_id))["status"] == "pending"


async def test_timeout_retries_then_ends_in_timeout(coordinator: Coordinator) -> None:
    """A running attempt past timeout_s is ended by the timer and its worker told to kill it; the retry waits
    until the worker confirms the old process gone, times out too, and the task ends `timeout`."""
    task_id = await submit_one(coordinator, timeout_s=1, max_retries=1)
    agent = await Agent.register(coordinator)
    for n in (1, 2):
        leased = await lease_when_due(coordinator, agent)
        assert leased["attempt"] == n
        await await_until(coordinator.lifecycle.time_out, timeout=20, what="the attempt to time out")
        assert not await agent.report(leased, "succeeded")  # too late: the attempt is over
        commands = await coordinator.workers.commands(agent.id)
        assert {"task_id": task_id, "attempt_id": leased["attempt_id"]} in [c["args"] for c in commands]
        assert all(c["command"] == "cancel-task" for c in commands)
        if n == 1:  # its old process may still run: no retry until the worker says it is gone
            await asyncio.sleep(0.5)  # past the backoff (0.2 s in the test settings)
            await agent.heartbeat()
            await coordinator.timers.tick()
            assert await agent.lease() == []
            assert (await task(coordinator, task_id))["stopping_attempt_id"] == uuid.UUID(leased["attempt_id"])
        assert await agent.confirm_stopped() == 1
    view = await task(coordinator, task_id)
    assert view["status"] == "timeout" and view["end_reason"] == "timeout" and "timed out" in view["error"]
    assert [a["end_reason"] for a in view["attempt_history"]] == ["timeout", "timeout"]
    assert await coordinator.lifecycle.time_out() == 0


async def test_cancel_of_a_running_task_is_stored_for_its_worker(coordinator: Coordinator) -> None:
    """Cancelling a running task stores a cancel-task command, delivered by every heartbeat until acknowledged."""
    task_id = await submit_one(coordinator)
    agent = await Agent.register(coordinator)
    [leased] = await agent.lease()
    await coordinator.lifecycle.act(Action.CANCEL, [uuid.UUID(task_id)], "test", single=True)
    for _ in range(2):
        beat = await agent.heartbeat(task_id)
        [command] = beat["commands"]
        assert command["command"] == "cancel-task"
        assert command["args"] == {"task_id": task_id, "attempt_id": leased["attempt_id"]}
        assert beat["stale_tasks"] == [task_id]
    assert await coordinator.workers.ack(agent.id, [command["id"]]) == 1
    assert (await agent.heartbeat())["commands"] == []


async def test_silent_worker_goes_offline_and_loses_its_task(settings: Settings, clean_db: None,
                                                            redis: SyncRedis) -> None:
    """No heartbeat for heartbeat_timeout: the worker is offline and its task pending again; a late heartbeat
    lists the task as stale and does not get it back, and the old attempt's report is refused."""
    async with started(settings, heartbeat_timeout=1.0) as coordinator:
        task_id = await submit_one(coordinator)
        agent = await Agent.register(coordinator)
        [leased] = await agent.lease()
        assert await coordinator.timers.reap_dead_workers() == 0
        await await_until(coordinator.timers.reap_dead_workers, what="the worker to be declared dead")
        assert await agent.status() == "offline"
        view = await task(coordinator, task_id)
        assert (view["status"], view["worker_losses"], view["retry_count"]) == ("pending", 1, 0)
        assert view["attempt_history"][-1]["end_reason"] == "worker_lost"

        beat = await agent.heartbeat(task_id)
        assert beat["stale_tasks"] == [task_id]
        assert (await task(coordinator, task_id))["status"] == "pending"
        assert (await coordinator.workers.get(agent.id))["running"] == 0
        assert not await agent.report(leased, "succeeded", result={"late": True})
        other = await Agent.register(coordinator)
        [again] = await other.lease()
        assert again["task_id"] == task_id and again["attempt_id"] != leased["attempt_id"]
        assert not await agent.report(leased, "succeeded")
        assert await other.report(again, "succeeded")


async def test_a_drained_worker_stays_drained_after_an_absence(settings: Settings, clean_db: None,
                                                               redis: SyncRedis) -> None:
    """An operator's drain outlives the worker going offline: when it heartbeats again it is draining, not
    online, and leases nothing until resumed."""
    async with started(settings, heartbeat_timeout=1.0) as coordinator:
        await submit_one(coordinator)
        agent = await Agent.register(coordinator)
        await coordinator.workers.send([agent.id], WorkerCommandSpec(command="drain"), "test")
        await await_until(coordinator.timers.reap_dead_workers, what="the worker to be declared dead")
        assert await agent.status() == "offline"
        assert (await agent.heartbeat())["status"] == "draining"
        assert await agent.lease_ids() == []
        await coordinator.workers.send([agent.id], WorkerCommandSpec(command="resume"), "test")
        assert len(await agent.lease_ids()) == 1


async def test_heartbeats_keep_a_worker_alive(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """A worker that keeps heartbeating is not reaped, however long its task runs."""
    async with started(settings, heartbeat_timeout=1.0) as coordinator:
        task_id = await submit_one(coordinator)
        agent = await Agent.register(coordinator)
        await agent.lease()
        for _ in range(6):  # 1.5 s in all, longer than the timeout
            assert (await agent.heartbeat(task_id))["stale_tasks"] == []
            assert await coordinator.timers.reap_dead_workers() == 0
            await asyncio.sleep(0.25)
        assert (await task(coordinator, task_id))["status"] == "running"


async def test_command_lookups_of_workers_that_beat_together_are_spread(coordinator: Coordinator) -> None:
    """Workers that first beat in the same second (a coordinator restart, a fleet started at once) look up their
    commands in PostgreSQL again at different times within 0.5-1.5 RECHECK_S, not all in one wave again (which
    stalled every heartbeat of a 500-worker cluster every 30 s)."""
    agents = [await Agent.register(coordinator, hostname=f"node-{i}") for i in range(50)]
    start = time.monotonic()
    for agent in agents:
        await agent.heartbeat()
    due = [coordinator.workers.beats._next_check[agent.id] - start for agent in agents]
    assert all(0.5 * RECHECK_S <= d <= 1.5 * RECHECK_S + 5 for d in due), due
    assert max(due) - min(due) > RECHECK_S / 2


async def test_a_lease_its_worker_never_got_is_requeued(settings: Settings, clean_db: None,
                                                       redis: SyncRedis) -> None:
    """A task leased to a worker whose heartbeats do not list it (the lease reply was lost) goes back to the queue
    once it has been leased for a heartbeat timeout: not sooner, not while listed, and not on a heartbeat that
    says nothing about its tasks. No retry is used up, and a report of that attempt is refused."""
    async with started(settings, heartbeat_timeout=1.0) as coordinator:
        kept, lost = await submit(coordinator, 2)
        agent = await Agent.register(coordinator)
        leased = {t["task_id"]: t for t in await agent.lease(2)}
        await agent.heartbeat(kept)
        assert (await task(coordinator, lost))["status"] == "running"  # within the grace
        await asyncio.sleep(1.1)
        await coordinator.workers.heartbeat(agent.id, Heartbeat(used_cpu=1.0))  # telemetry only: no verdict
        assert (await task(coordinator, lost))["status"] == "running"
        await agent.heartbeat(kept)
        requeued = await task(coordinator, lost)
        assert (requeued["status"], requeued["retry_count"]) == ("pending", 0)
        assert requeued["attempt_history"][-1]["end_reason"] == "requeued"
        assert (await task(coordinator, kept))["status"] == "running"
        assert not await agent.report(leased[lost], "succeeded")
        assert await agent.lease_ids() == [lost]


def test_late_report_after_requeue_is_409(client: httpx.Client) -> None:
    """After an operator requeues a running task, the old attempt's report gets 409 and changes nothing."""
    agent = HttpAgent.register(client)
    task_id = client.post("/api/v1/tasks", json=task_body()).json()["id"]
    [old] = agent.lease()
    assert client.post(f"/api/v1/tasks/{task_id}/requeue").status_code == 200
    late = agent.report(old, "succeeded", result={"stale": True})
    assert late.status_code == 409
    assert late.json()["results"][0]["status"] == 409
    assert client.get(f"/api/v1/tasks/{task_id}").json()["status"] == "pending"
    assert agent.lease() == []  # not while the old attempt may still run
    assert agent.confirm_stopped() == 1
    [new] = agent.lease()
    assert new["task_id"] == task_id and new["attempt_id"] != old["attempt_id"]
    assert agent.report(old, "failed", error="late").status_code == 409
    assert agent.report(new, "succeeded", result={"fresh": True}).status_code == 200
    final = client.get(f"/api/v1/tasks/{task_id}").json()
    assert final["status"] == "succeeded" and final["result"] == {"fresh": True}
    assert client.get("/api/v1/stats/dashboard").json()["counters"]["refused"] == 2  # both late reports


def test_report_for_another_workers_attempt_is_409(client: httpx.Client) -> None:
    """A worker cannot report on an attempt leased by another worker, even with a valid token of its own."""
    owner, intruder = HttpAgent.register(client), HttpAgent.register(client)
    client.post("/api/v1/tasks", json=task_body())
    [leased] = owner.lease()
    assert intruder.report(leased, "succeeded").status_code == 409
    assert owner.report(leased, "succeeded").status_code == 200


async def test_worker_loss_cap_fails_the_task(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """A task whose worker dies max_worker_losses (3) times ends `failed`, with the reason in `error`."""
    async with started(settings, heartbeat_timeout=0.3) as coordinator:
        task_id = await submit_one(coordinator, max_retries=10)
        for loss in (1, 2, 3):
            victim = await Agent.register(coordinator, hostname=f"victim{loss}")
            [leased] = await victim.lease()
            assert leased["task_id"] == task_id
            await await_until(coordinator.timers.reap_dead_workers, what=f"loss {loss}")
        view = await task(coordinator, task_id)
        assert (view["status"], view["end_reason"], view["worker_losses"]) == ("failed", "worker_lost", 3)
        assert "worker lost 3 times" in view["error"]
        assert view["retry_count"] == 0


async def test_task_that_must_not_run_twice_fails_on_its_first_worker_loss(settings: Settings, clean_db: None,
                                                                           redis: SyncRedis) -> None:
    """Without worker_lost in retry_on a task is failed, not requeued, when its worker dies."""
    async with started(settings, heartbeat_timeout=0.3) as coordinator:
        task_id = await submit_one(coordinator, retry_on=["error"])
        agent = await Agent.register(coordinator)
        await agent.lease()
        await await_until(coordinator.timers.reap_dead_workers)
        view = await task(coordinator, task_id)
        assert (view["status"], view["end_reason"]) == ("failed", "worker_lost")


async def test_graceful_stop_requeues_without_counting_a_loss(coordinator: Coordinator) -> None:
    """A worker that deregisters hands its task back: pending again, no worker loss, no retry used."""
    task_id = await submit_one(coordinator)
    agent = await Agent.register(coordinator)
    await agent.lease()
    assert (await coordinator.workers.deregister(agent.id))["requeued"] == 1
    view = await task(coordinator, task_id)
    assert (view["status"], view["worker_losses"], view["retry_count"]) == ("pending", 0, 0)
    assert view["attempt_history"][-1]["end_reason"] == "requeued"


async def test_only_one_coordinator_leads(settings: Settings, coordinator: Coordinator) -> None:
    """Of two coordinators ticking on one Redis only one holds the leader lease; when it stops, the other leads."""
    async with started(settings) as other:
        for _ in range(3):
            await coordinator.timers.tick()
            await other.timers.tick()
        assert coordinator.timers.leader_since is not None and other.timers.leader_since is None
        assert (await coordinator.health())["leader"] and not (await other.health())["leader"]
        await coordinator.timers.stop()
        await other.timers.tick()
        await coordinator.timers.tick()
        assert other.timers.leader_since is not None and coordinator.timers.leader_since is None


async def test_a_leader_whose_tick_fails_hands_over_at_once(settings: Settings, clean_db: None,
                                                            redis: SyncRedis) -> None:
    """A leader whose path to PostgreSQL is cut (a relay in front of it) gives the lease up in the tick that
    fails; the healthy coordinator leads at its next tick."""
    url = make_url(settings.database_url or "")
    link = Link(url.port or 5432).start()
    try:
        cut_off = url.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
        async with started(settings, database_url=cut_off) as leader, started(settings) as healthy:
            assert await leader.timers.guarded_tick() and leader.timers.leader_since is not None
            assert await healthy.timers.guarded_tick() and healthy.timers.leader_since is None
            link.cut()
            assert not await leader.timers.guarded_tick()
            assert redis.get(leader.core.keys.leader) is None
            assert await healthy.timers.guarded_tick() and healthy.timers.leader_since is not None
            link.mend()
    finally:
        link.stop()


async def test_a_claim_that_cannot_be_confirmed_goes_back_to_its_queue(settings: Settings, clean_db: None,
                                                                       redis: SyncRedis) -> None:
    """A lease whose coordinator lost PostgreSQL between the Redis claim and its commit fails, and the task it
    claimed is back in its queue at once: a worker of a healthy coordinator gets it (no wait for a drift check)."""
    url = make_url(settings.database_url or "")
    link = Link(url.port or 5432).start()
    try:
        cut_off = url.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
        async with started(settings, database_url=cut_off) as broken, started(settings) as healthy:
            task_id = await submit_one(healthy)
            stranded = await Agent.register(broken, hostname="cut-off")
            link.cut()
            with pytest.raises(Exception):  # noqa: B017 - which driver error it is does not matter here
                await stranded.lease()
            assert await (await Agent.register(healthy)).lease_ids() == [task_id]
    finally:
        link.stop()


async def test_new_leader_holds_back_before_reaping(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """A coordinator that just took the lease waits one heartbeat timeout before declaring a worker dead."""
    async with started(settings, heartbeat_timeout=0.6, heartbeat_check_interval=0.05) as coordinator:
        task_id = await submit_one(coordinator)
        agent = await Agent.register(coordinator)
        await agent.lease()
        await asyncio.sleep(0.8)  # the worker is already silent for longer than the timeout
        before_lease = time.monotonic()
        await coordinator.timers.tick()
        assert coordinator.timers.leader_since is not None
        assert await agent.status() == "online"

        async def reaped() -> bool:
            await coordinator.timers.tick()
            return await agent.status() == "offline"
        await await_until(reaped, what="the held-back reap")
        assert time.monotonic() - before_lease >= 0.6
        assert (await task(coordinator, task_id))["status"] == "pending"


async def test_running_timers_retry_and_reap_on_their_own(settings: Settings, clean_db: None,
                                                          redis: SyncRedis) -> None:
    """With the timers running in the background a failed task comes back after its backoff and a silent
    worker is reaped, without anyone calling them."""
    async with started(settings, timers=True, heartbeat_timeout=1.5, heartbeat_check_interval=0.1) as coordinator:
        task_id = await submit_one(coordinator)
        agent = await Agent.register(coordinator)
        [leased] = await agent.lease()
        assert await agent.report(leased, "failed", error="exit 1")
        await agent.heartbeat()  # then silence: reaped 1.5 s from now, long after the retry is due
        again = await agent.lease(wait_s=10)
        assert [t["task_id"] for t in again] == [task_id]

        async def offline() -> bool:
            return await agent.status() == "offline"
        await await_until(offline, what="the background reaper")

        async def requeued() -> bool:  # the worker is marked offline first, then its attempts end (mark_offline)
            return (await task(coordinator, task_id))["status"] == "pending"
        await await_until(requeued, timeout=5, what="the reaped worker's task back in the queue")


def test_report_after_timeout_over_http_is_409(api_server: BackgroundServer, client: httpx.Client) -> None:
    """An attempt ended by the timeout timer refuses its worker's later success report with 409."""
    agent = HttpAgent.register(client)
    task_id = client.post("/api/v1/tasks", json=task_body(timeout_s=1, max_retries=0)).json()["id"]
    [leased] = agent.lease()
    coordinator = api_server.coordinator
    deadline = time.monotonic() + 20
    while api_server.call(coordinator.lifecycle.time_out) == 0:
        assert time.monotonic() < deadline, "the attempt never timed out"
        time.sleep(0.1)
    assert agent.report(leased, "succeeded").status_code == 409
    assert client.get(f"/api/v1/tasks/{task_id}").json()["status"] == "timeout"


TASKS_OF_STATUS = text("""
INSERT INTO tasks (id, service, task_type, name, input_params, priority, "group", labels, cpu, memory_gb, gpu,
    gpu_memory_gb, max_retries, timeout_s, retry_on, input_files, outputs, submitted_by, status, attempts,
    retry_count, worker_losses, gpus, finished_at)
SELECT gen_random_uuid(), 'svc', 'noop', '', '{}', 2, 'default', '[]', 1, 0, 0, 0, 3, 300, '[]', '[]', '[]', '',
    CAST(:status AS text), 0, 0, 0, '[]', CASE WHEN CAST(:status AS text) = 'pending' THEN NULL ELSE now() END
FROM generate_series(1, :n)""")


async def test_stale_statistics_do_not_steer_a_lease_onto_the_status_index(coordinator: Coordinator) -> None:
    """Statistics taken when nothing was pending (as after a drain) do not steer the lease's update onto the status
    index, nor into rescanning its ids once per pending task: either reads every pending task, and its dead
    versions, a lease (see `lifecycle.by_key`). The plan PostgreSQL runs is read with EXPLAIN ANALYZE, rolled back."""
    async with coordinator.core.engine.begin() as conn:
        await conn.execute(TASKS_OF_STATUS, {"status": "succeeded", "n": 2000})
        await conn.execute(text("ANALYZE tasks"))
        await conn.execute(TASKS_OF_STATUS, {"status": "pending", "n": 2000})
    async with coordinator.core.engine.connect() as conn:
        ids = [str(i) for i in (await conn.execute(text("SELECT id FROM tasks WHERE status = 'pending' LIMIT 50")))
               .scalars()]
        plan = "\n".join((await conn.execute(text("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + START.text), {
            "worker": uuid.uuid4(), "ids": ids, "attempts": [str(uuid.uuid4()) for _ in ids],
            "gpus": ["[]"] * len(ids)})).scalars())
        await conn.rollback()
    assert "(actual rows=50 loops=1)" in plan, plan  # the update ran, on all 50
    assert "ix_tasks_status_service" not in plan, plan
    assert not re.search(r"Function Scan on v .*loops=(?!1\))", plan), plan
