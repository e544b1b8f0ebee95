"""Races between operators and agents: each task changes once and ends with one accepted outcome.

The racing calls go out together over HTTP (asyncio.gather) to a real coordinator process; an agent
scripted over HTTP reports at exactly the chosen moment, and a real agent shows that a cancel that
answered OK really stopped the work.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from tests.faults.cluster import Cluster, Stopwatch
from tests.faults.processes import alive
from tests.faults.truth import Figures, read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
T = TypeVar("T")
ROUNDS = 40
RACE_SETTINGS = {"AIDD_HEARTBEAT_TIMEOUT": "60"}
"""The scripted agent sends no heartbeats: it must not be declared lost mid-race."""


class ScriptedAgent:
    """An agent speaking the worker API itself, so a report leaves at the chosen instant."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.id = ""
        self.headers: dict[str, str] = {}

    async def register(self, hostname: str) -> ScriptedAgent:
        reply = await self.http.post("/api/v1/workers/register", json={"hostname": hostname, "cpu_cores": 64})
        assert reply.status_code == 201, reply.text
        self.id, self.headers = reply.json()["id"], {"Authorization": f"Bearer {reply.json()['token']}"}
        return self

    async def lease(self, count: int) -> list[dict[str, Any]]:
        reply = await self.http.post(f"/api/v1/workers/{self.id}/lease", json={"max_tasks": count},
                                     headers=self.headers)
        assert reply.status_code == 200, reply.text
        return list(reply.json()["tasks"])

    async def lease_all(self, count: int) -> list[dict[str, Any]]:
        """Lease until `count` tasks are held (fails after 30 s)."""
        held: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(held) < count and time.monotonic() < deadline:
            held += await self.lease(count - len(held))
        assert len(held) == count, f"leased {len(held)} of {count}"
        return held

    async def confirm_stopped(self) -> None:
        """Acknowledge the cancel-task commands, as an agent does once the attempt's process is gone (a requeued
        task waits for that before it runs again)."""
        path = f"/api/v1/workers/{self.id}/commands"
        commands = (await self.http.get(path, headers=self.headers)).json()["items"]
        kills = [c["id"] for c in commands if c["command"] == "cancel-task"]
        if kills:
            reply = await self.http.request("DELETE", path, json={"ids": kills}, headers=self.headers)
            assert reply.status_code == 200, reply.text

    async def report(self, leased: dict[str, Any], event: str, **fields: Any) -> int:
        """Report one event; its per-event status (200 accepted, 409 refused)."""
        reply = await self.http.post(f"/api/v1/workers/{self.id}/reports", headers=self.headers, json={
            "events": [{"task_id": leased["task_id"], "attempt_id": leased["attempt_id"], "event": event, **fields}]})
        return int(reply.json()["results"][0]["status"])


def counts(**by_status: int) -> dict[str, int]:
    """Outcome counts as Figures has them (statuses no task is in left out)."""
    return {status: n for status, n in by_status.items() if n}


async def jittered(call: Awaitable[T]) -> T:
    """`call` after 0-10 ms, so either side of a race may leave first."""
    await asyncio.sleep(random.uniform(0, 0.01))
    return await call


async def race(system: Cluster, count: int,
               contest: Callable[[httpx.AsyncClient, ScriptedAgent, dict[str, Any]], Any]) -> list[Any]:
    """Submit `count` tasks, lease them with a scripted agent, and run `contest` on each at once; then the agent
    confirms the attempts it was told to kill gone, as a real one does."""
    system.submit([{"service": "race", "task_type": "noop", "name": "race"} for _ in range(count)])
    async with httpx.AsyncClient(base_url=system.coordinators[0].url, timeout=30) as http:
        agent = await ScriptedAgent(http).register("scripted")
        leased = await agent.lease_all(count)
        results = list(await asyncio.gather(*(contest(http, agent, task) for task in leased)))
        await agent.confirm_stopped()  # what the coordinator told it to kill is gone (it never ran anything)
        return results


def test_cancel_races_completion(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """Cancel and the success report of the same attempt sent at once: exactly one of them wins."""
    system = cluster(**RACE_SETTINGS)
    system.coordinator()

    async def contest(http: httpx.AsyncClient, agent: ScriptedAgent, task: dict[str, Any]) -> tuple[int, int]:
        cancel, report = await asyncio.gather(jittered(http.delete(f"/api/v1/tasks/{task['task_id']}")),
                                              jittered(agent.report(task, "succeeded", result={"ok": True})))
        return cancel.status_code, report

    results = asyncio.run(race(system, ROUNDS, contest))
    system.settle(30)
    won = Counter("cancel" if c == 200 else "report" for c, _ in results)
    figures = system.figures("race: cancel vs completion", records=False,
                             note=f"cancel won {won['cancel']}, completion won {won['report']}")
    record(figures)
    assert all((c, r) in ((200, 409), (409, 200)) for c, r in results), results
    assert figures.outcomes == counts(cancelled=won["cancel"], succeeded=won["report"])


def test_two_operators_retry_at_once(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """Failed tasks retried by two operators at the same instant (one by id, one in bulk): each task is retried
    once — queued once, leased once more, one outcome."""
    system = cluster(**RACE_SETTINGS)
    system.coordinator()

    async def contest(http: httpx.AsyncClient, agent: ScriptedAgent, task: dict[str, Any]) -> tuple[int, int]:
        assert await agent.report(task, "failed", reason="permanent", error="bad input") == 200
        one, bulk = await asyncio.gather(jittered(http.post(f"/api/v1/tasks/{task['task_id']}/retry")),
                                         jittered(http.post("/api/v1/tasks/bulk/retry",
                                                            json={"ids": [task["task_id"]]})))
        return one.status_code, int(bulk.json()["changed"])

    async def run() -> tuple[list[Any], list[dict[str, Any]]]:
        results = await race(system, ROUNDS, contest)
        async with httpx.AsyncClient(base_url=system.coordinators[0].url, timeout=30) as http:
            again = await ScriptedAgent(http).register("second")
            leased = await again.lease_all(ROUNDS)
            assert await again.lease(ROUNDS) == []  # none was queued twice
            for task in leased:
                assert await again.report(task, "succeeded", result={}) == 200
        return results, leased

    results, leased = asyncio.run(run())
    system.settle(30)
    figures = system.figures("race: two operators retry at once", records=False)
    record(figures)
    assert all(r in ((200, 0), (409, 1)) for r in results), results
    assert sorted(t["task_id"] for t in leased) == sorted(system.ledger.ids())
    assert figures.outcomes == {"succeeded": ROUNDS}
    retries = [e for e in system.api().http.get("/api/v1/audit?limit=1000").json()["items"]
               if e["action"] == "task.retry" and e["count"]]
    assert len(retries) == ROUNDS  # one recorded change per task, whoever won


def test_requeue_races_completion(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """A requeue sent as the task finishes: either the requeue wins (the success is refused, the task runs again
    and succeeds then) or the success wins (the requeue is refused); one outcome either way. A requeue of a task
    that has finished changes nothing."""
    system = cluster(**RACE_SETTINGS)
    system.coordinator()

    async def contest(http: httpx.AsyncClient, agent: ScriptedAgent, task: dict[str, Any]) -> tuple[int, int]:
        requeue, report = await asyncio.gather(jittered(http.post(f"/api/v1/tasks/{task['task_id']}/requeue")),
                                               jittered(agent.report(task, "succeeded", result={"first": True})))
        return requeue.status_code, report

    async def run() -> list[Any]:
        results = await race(system, ROUNDS, contest)
        requeued = sum(1 for q, _ in results if q == 200)
        async with httpx.AsyncClient(base_url=system.coordinators[0].url, timeout=30) as http:
            again = await ScriptedAgent(http).register("second")
            for task in await again.lease_all(requeued):
                assert await again.report(task, "succeeded", result={"second": True}) == 200
            late = [await http.post(f"/api/v1/tasks/{i}/requeue") for i in system.ledger.ids()]
        assert {r.status_code for r in late} == {409}
        return results

    results = asyncio.run(run())
    system.settle(30)
    won = Counter("requeue" if q == 200 else "report" for q, _ in results)
    figures = system.figures("race: requeue vs completion", records=False,
                             note=f"requeue won {won['requeue']}, completion won {won['report']}")
    record(figures)
    assert all(r in ((200, 409), (409, 200)) for r in results), results
    assert figures.outcomes == {"succeeded": ROUNDS}


def test_cancel_stops_the_work_it_acknowledges(cluster: Callable[..., Cluster],
                                               record: Callable[[Figures], None]) -> None:
    """Cancels of running tasks on a real agent, some as they finish: a cancel that answered 200 leaves the task
    cancelled and its processes (helpers included) dead within a few heartbeats — never "cancelled" while the
    work goes on; a cancel that came too late is refused (409) and the task keeps its success."""
    system = cluster()
    system.coordinator()
    system.agent("a", 12)
    ids = system.submit([system.task(2.0 + 0.15 * i, child=True) for i in range(12)])
    wait_until(lambda: sum(ex.ended for ex in read_records(system.records).values()) >= 3, 30, "three tasks to finish")
    clock = Stopwatch()
    answers = {i: system.api().http.delete(f"/api/v1/tasks/{i}").status_code for i in ids}
    cancelled = [i for i, status in answers.items() if status == 200]
    runs = [ex for ex in read_records(system.records).values() if ex.task in cancelled]
    gone = clock.until(lambda: not any(alive(pid) for ex in runs for pid in ex.pids), 15,
                       "the cancelled tasks' processes to die")
    system.settle(30)
    finished = [ex for ex in read_records(system.records).values() if ex.task in cancelled and ex.ended]
    figures = system.figures("cancel vs finishing work (real agent)", gone, None,
                             note=f"{len(cancelled)} of 12 cancels answered 200, their processes gone after "
                                  f"{gone:.2f}s ({len(finished)} finished first)")
    record(figures)
    assert cancelled and set(answers.values()) <= {200, 409}
    assert figures.outcomes == counts(cancelled=len(cancelled), succeeded=12 - len(cancelled))
    assert system.agents[0].running()
