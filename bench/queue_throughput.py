"""Submit and drain throughput of the coordinator over real HTTP, next to raw redis-py in the same run.

    .venv/bin/python -m bench.queue_throughput [--tasks 10000] [--agents 4] [--lease 50]

Starts embedded Redis + PostgreSQL in a temporary state dir, `aidd --serve` in its own process on
them, then: submits N no-op tasks through the batch endpoint (chunks of 1000, a few in flight),
and drains them with simulated agents through the real lease/report API (every state change
durable in PostgreSQL). The reference is redis-py LPUSH/RPOP on the same Redis: one round trip per
operation, and pipelined.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from coordinator.embedded import start_embedded

CHUNK = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_redis_rates(url: str, n: int) -> dict[str, float]:
    """LPUSH then RPOP of n small items: per-op round trips, and pipelined in chunks of 1000."""
    client = redis.Redis.from_url(url)
    key = "bench:raw"
    client.delete(key)
    start = time.perf_counter()
    for i in range(n):
        client.lpush(key, i)
    for _ in range(n):
        client.rpop(key)
    single = 2 * n / (time.perf_counter() - start)
    start = time.perf_counter()
    for base in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(base, min(base + 1000, n)):
            pipe.lpush(key, i)
        pipe.execute()
    for base in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(base, min(base + 1000, n)):
            pipe.rpop(key)
        pipe.execute()
    pipelined = 2 * n / (time.perf_counter() - start)
    client.close()
    return {"ops_per_s_single": single, "ops_per_s_pipelined": pipelined}


async def submit_all(http: httpx.AsyncClient, n: int, in_flight: int = 4) -> float:
    """Submit n no-op tasks as one batch (several requests); returns tasks/s."""
    first = await http.post("/api/v1/tasks", json={"name": "bench", "defaults": {"service": "bench",
                                                                                  "task_type": "noop"},
                                                    "tasks": [{"input_params": {"i": 0}}]})
    first.raise_for_status()
    batch_id = first.json()["batch_id"]
    chunks = [list(range(s, min(s + CHUNK, n))) for s in range(1, n, CHUNK)]
    gate = asyncio.Semaphore(in_flight)

    async def send(items: list[int]) -> None:
        async with gate:
            r = await http.post("/api/v1/tasks", json={"batch_id": batch_id, "defaults": {
                "service": "bench", "task_type": "noop"}, "tasks": [{"input_params": {"i": i}} for i in items]})
            r.raise_for_status()
    start = time.perf_counter()
    await asyncio.gather(*(send(c) for c in chunks))
    return (n - 1) / (time.perf_counter() - start)


async def agent(http: httpx.AsyncClient, lease_size: int, done: list[int], total: int) -> None:
    """A simulated agent: lease up to `lease_size`, report them all succeeded in one request, repeat."""
    reg = (await http.post("/api/v1/workers/register", json={"hostname": "bench", "cpu_cores": 64})).json()
    headers = {"Authorization": f"Bearer {reg['token']}"}
    wid = reg["id"]
    while done[0] < total:
        r = await http.post(f"/api/v1/workers/{wid}/lease", headers=headers,
                            json={"max_tasks": lease_size, "wait_s": 0.5})
        tasks = r.json()["tasks"]
        if not tasks:
            continue
        events = [{"task_id": t["task_id"], "attempt_id": t["attempt_id"], "event": "succeeded",
                   "result": {"ok": True}} for t in tasks]
        r = await http.post(f"/api/v1/workers/{wid}/reports", headers=headers, json={"events": events})
        r.raise_for_status()
        done[0] += sum(1 for x in r.json()["results"] if x["status"] == 200)


async def drain(url: str, n: int, agents: int, lease_size: int) -> float:
    limits = httpx.Limits(max_connections=agents + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        done = [0]
        start = time.perf_counter()
        await asyncio.gather(*(agent(http, lease_size, done, n) for _ in range(agents)))
        return done[0] / (time.perf_counter() - start)


async def measure(url: str, n: int, agents: int, lease_size: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        submit_rate = await submit_all(http, n)
    drain_rate = await drain(url, n, agents, lease_size)
    return {"submit_tasks_per_s": submit_rate, "drain_tasks_per_s": drain_rate}


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"coordinator exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("coordinator did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--lease", type=int, default=50, help="tasks per lease")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aidd-bench-") as state:
        servers = start_embedded(Path(state))
        port = free_port()
        env = {**os.environ, "AIDD_REDIS_URL": servers.redis_url, "AIDD_DATABASE_URL": servers.database_url,
               "AIDD_MAX_PENDING_PER_SERVICE": str(args.tasks + 1)}
        proc = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", str(port)],
                                env=env, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            ours = asyncio.run(measure(url, args.tasks, args.agents, args.lease))
            raw = raw_redis_rates(servers.redis_url, args.tasks)
        finally:
            proc.terminate()
            proc.wait(30)
            servers.stop()
    single = raw["ops_per_s_single"]
    rows: list[tuple[str, float, str]] = [
        ("submit, tasks/s (HTTP batch, durable)", ours["submit_tasks_per_s"], "target >= 5000"),
        ("drain, tasks/s (lease + report, durable)", ours["drain_tasks_per_s"], "target >= 1000"),
        ("raw redis-py LPUSH/RPOP, ops/s (1 round trip each)", single, "reference"),
        ("raw redis-py LPUSH/RPOP, ops/s (pipelined)", raw["ops_per_s_pipelined"], "ceiling"),
    ]
    print(f"{args.tasks} tasks, {args.agents} simulated agents, {args.lease} tasks per lease")
    for name, value, note in rows:
        print(f"  {name:<52} {value:>10,.0f}   {value / single:5.2f}x raw   {note}")
    result: dict[str, Any] = {"tasks": args.tasks, "agents": args.agents, "lease": args.lease, **ours, **raw}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
