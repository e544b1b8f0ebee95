"""Our side of the comparison: `aidd --serve` in its own process and one real agent process (`nodeagent.cli`).

The agent runs the built-in `noop` plugin for the drain and `stamp` (bench.plugins) for latency. Every
state change is committed to PostgreSQL before it is acknowledged; the drain clock reads the coordinator's
own finished counter in Redis, which follows the commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.harness import (
    Child,
    CpuMeter,
    DrainClock,
    SlowLog,
    healthy,
    latency_summary,
    python,
    python_env,
    spawn,
    wait_for,
)
from coordinator.keys import Keys
from coordinator.queue import LUA_DIR, _script_source
from tests.support.ports import free_port

KEEPS = ("every state change durable in PostgreSQL before it is acknowledged: the task row (status, attempt, "
         "worker, timestamps, result), one attempt row per run, worker records; Redis holds only the rebuildable "
         "queue index")


KEYS = Keys()
"""The keys of the coordinator measured here (the default prefix)."""
CHUNK = 1000
NOOP = {"service": "bench", "task_type": "noop", "resources": {"cpu": 0}}
"""The drain's task: a no-op reserves no CPU, so the agent's slots (not its cores) bound how many run at once."""


def script_names() -> dict[str, str]:
    """Our Lua scripts' names by their SHA-1, as EVALSHA names them in the slow log."""
    return {hashlib.sha1(_script_source(name).encode()).hexdigest(): name
            for name in (path.stem for path in LUA_DIR.glob("*.lua")) if name != "common"}


async def submit_all(http: httpx.AsyncClient, n: int, in_flight: int = 4) -> float:
    """Submit n no-op tasks as one batch (requests of CHUNK tasks, `in_flight` at a time); returns tasks/s."""
    start = time.perf_counter()
    first = await http.post("/api/v1/tasks", json={"name": "bench", "defaults": NOOP, "tasks": [{"input_params": {}}]})
    first.raise_for_status()
    batch_id = first.json()["batch_id"]
    gate = asyncio.Semaphore(in_flight)

    async def send(size: int) -> None:
        body = orjson.dumps({"batch_id": batch_id, "defaults": NOOP, "tasks": [{"input_params": {}}] * size})
        async with gate:
            r = await http.post("/api/v1/tasks", content=body, headers={"content-type": "application/json"})
            r.raise_for_status()
    await asyncio.gather(*(send(min(CHUNK, n - s)) for s in range(1, n, CHUNK)))
    return n / (time.perf_counter() - start)


class Ours:
    """Coordinator processes on the shared Redis (database 0) and the embedded PostgreSQL; `coordinators` of them
    share the stores as a fleet's do, the agents spread over them in turn."""

    def __init__(self, redis_url: str, database_url: str, state: Path, log_dir: Path, max_pending: int,
                 stores: dict[str, int], coordinators: int = 1) -> None:
        """`stores`: the pids of the Redis and PostgreSQL servers by name (their CPU is counted in drains)."""
        self.redis_url, self.state, self.log_dir, self.stores = redis_url, state, log_dir, stores
        self.urls = [f"http://127.0.0.1:{free_port()}" for _ in range(coordinators)]
        self.url = self.urls[0]
        """Where submissions and the latency agent go."""
        self.env = python_env(AIDD_REDIS_URL=redis_url, AIDD_DATABASE_URL=database_url,
                              AIDD_STATE_DIR=str(state / "coordinator"), AIDD_MAX_PENDING_PER_SERVICE=str(max_pending))
        self.servers: list[Child] = []

    def start(self) -> None:
        for i, url in enumerate(self.urls):
            port = url.rsplit(":", 1)[1]
            self.servers.append(spawn(f"coordinator-{i}", python("-m", "aiddclient.cli", "--serve", "--port", port),
                                      self.env, self.log_dir))
        for url in self.urls:
            wait_for(lambda url=url: healthy(url), 60, "the coordinator", children=self.servers)  # type: ignore[misc]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def finished(self, client: redis.Redis) -> int:
        raw = client.hget(KEYS.counters, "succeeded")
        return int(raw) if raw else 0

    def agent(self, slots: int, name: str, url: str | None = None) -> Child:
        """One real agent process, on `url` (the first coordinator by default)."""
        argv = python("-m", "nodeagent.cli", "--url", url or self.url, "--slots", str(slots), "--hostname", name,
                      "--work-dir", str(self.state / f"work-{name}"), "--plugin-module", "bench.plugins",
                      "--log-level", "warning")
        return spawn(name, argv, self.env, self.log_dir)

    def drain(self, n: int, slots: int, timeout: float, slow: SlowLog | None = None, agents: int = 1) -> dict[str, Any]:
        """Submit n no-op tasks over HTTP to a paused service (the submit figure), start `agents` agent processes,
        resume the service once every one has registered, and time them until all are done; with `slow`, the
        longest Redis command of the submit and of the drain too.

        The pause lets several agents start together: none leases before the last is up, so the rate is that of
        all of them, not of the first one up while the others import."""
        client = redis.Redis.from_url(self.redis_url)
        before = self.finished(client)

        async def submit() -> float:
            async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
                return await submit_all(http, n)
        http = httpx.Client(base_url=self.url, timeout=30)
        http.post(f"/api/v1/services/{NOOP['service']}/pause").raise_for_status()
        if slow:
            slow.take()
        submit_rate = asyncio.run(submit())
        slowest = {"submit": slow.take()} if slow else {}
        names = [f"agent-drain-{before}-{i}" for i in range(agents)]
        started = [self.agent(slots, name, self.urls[i % len(self.urls)]) for i, name in enumerate(names)]
        try:
            wait_for(lambda: _online(http, names), 60, f"{agents} agent(s) to register",
                     children=[*started, *self.servers])
            parts = [*(("coordinator", server.pid, None) for server in self.servers),
                     *(("agent", agent.pid, "plugin hosts") for agent in started),
                     *((name, pid, None) for name, pid in self.stores.items())]
            meters: list[CpuMeter] = []  # counts from the first completion, as the drain clock does
            clock = DrainClock(lambda: self.finished(client) - before, n,
                               at_first=lambda: meters.append(CpuMeter(parts)))
            http.post(f"/api/v1/services/{NOOP['service']}/resume").raise_for_status()
            rate = clock.run(timeout, [*started, *self.servers])
            cpu_ms = meters[0].per_task_ms(n - clock.first_done)
            cores = cpu_ms["total"] * rate / 1000
            if slow:
                slowest["drain"] = slow.take()
        finally:
            for agent in started:
                agent.stop()
            http.close()
        return {"submit_tasks_per_s": submit_rate, "drain_tasks_per_s": rate, "slots": slots, "agents": agents,
                "coordinators": len(self.servers), "cpu_ms_per_task": cpu_ms, "cores_busy": cores,
                "slowest_redis_command": slowest}

    def latency(self, n: int, slots: int, warmup: int = 20) -> dict[str, Any]:
        """One task at a time on an idle agent: submit -> the plugin function entered, submit -> finished_at."""
        starts: list[float] = []
        ends: list[float] = []
        for sent, _answered, task in self.single_tasks(n, slots, warmup):
            starts.append(float(task["result"]["started"]) - sent)
            ends.append(datetime.fromisoformat(task["finished_at"]).timestamp() - sent)
        return {"start": latency_summary(starts), "finish": latency_summary(ends)}

    def single_tasks(self, n: int, slots: int, warmup: int = 20) -> Iterator[tuple[float, float, dict[str, Any]]]:
        """Submit `stamp` tasks one at a time to an idle agent, each once the previous finished; for the `n` after
        the warm-up: when it was sent, when the submit was answered, and the finished task as the API shows it."""
        client = redis.Redis.from_url(self.redis_url)
        agent = self.agent(slots, "agent-latency")
        try:
            with httpx.Client(base_url=self.url, timeout=30) as http:
                for i in range(warmup + n):
                    sent = time.time()
                    r = http.post("/api/v1/tasks", json={**NOOP, "task_type": "stamp", "input_params": {"i": i}})
                    answered = time.time()
                    r.raise_for_status()
                    task_id = r.json()["id"]
                    wait_for(lambda task_id=task_id: _finished(client, task_id), 60 if i == 0 else 10,  # type: ignore[misc]
                             "a latency task to finish", interval=0.0005, children=[agent, *self.servers])
                    if i >= warmup:
                        yield sent, answered, http.get(f"/api/v1/tasks/{task_id}").json()
                    time.sleep(0.002)
        finally:
            agent.stop()


def _finished(client: redis.Redis, task_id: str) -> bool:
    """Whether the task has left the index (its hash goes when it finishes, in the script that counts it)."""
    return not client.exists(KEYS.task(task_id))


def _online(http: httpx.Client, hostnames: list[str]) -> bool:
    """Whether every one of these agents has registered and is online."""
    workers = http.get("/api/v1/workers", params={"status": "online"}).json()["items"]
    return set(hostnames) <= {worker["hostname"] for worker in workers}
