"""Does retention hold up submissions or leases? Their latency before, and while, the leader deletes a long history.

    python -m bench.retention_load [--tasks 1000000] [--seconds 30] [--rate 20]

Seeds the store (`bench.history`: finish times spread over 200 days, so over half the rows are past the default
90-day window; attempts and log lines with them). Phase 1, the reference: `aidd --serve` with retention off
(`AIDD_TASK_RETENTION_DAYS=0`) under a steady load for `--seconds`: a client submits one task at a time at `--rate`
per second, and an agent leases (`wait_s` 0) at the same rate and reports each task it gets succeeded; every call's
latency is recorded. Phase 2: the coordinator restarts with the 90-day window, its first leading tick starts the
deletion, and the same load runs until no row more than an hour past the window is left. Prints p50 / p99 / max
of submit and lease in both phases, and how long the deletion took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.harness import Child, free_port, python, python_env, spawn, wait_for
from bench.history import seed
from coordinator.db import create_engine
from coordinator.embedded import EmbeddedServers, start_embedded

SERVICE = "retention-bench"
WINDOW_DAYS = 90
OLDEST = text("SELECT extract(epoch FROM now() - min(finished_at)) / 86400 FROM tasks")
"""Age in days of the oldest finished task (one probe of the finished_at index)."""
ROWS = text("SELECT count(*) FROM tasks")
SLACK_DAYS = 1 / 24
"""Rows keep crossing the window as time passes (one run takes those past it when it starts): an hour's slack."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary(values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return f"{statistics.median(ms):.1f} / {percentile(ms, 0.99):.1f} / {max(ms):.0f} ms (n={len(ms)})"


async def load(url: str, rate: float, until: Any) -> dict[str, list[float]]:
    """Submit and lease at `rate` per second each until `await until()` is true; every call's latency."""
    times: dict[str, list[float]] = {"submit": [], "lease": []}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        reply = await http.post("/api/v1/workers/register", json={"hostname": "retention-bench", "slots": 64,
                                                                   "services": [SERVICE]})
        worker = reply.json()
        auth = {"Authorization": f"Bearer {worker['token']}"}
        stop = asyncio.Event()

        async def submitter() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                answer = await http.post("/api/v1/tasks", json={"service": SERVICE, "task_type": "noop"})
                times["submit"].append(time.perf_counter() - t0)
                assert answer.status_code == 201, answer.text
                await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))

        async def leaser() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                answer = await http.post(f"/api/v1/workers/{worker['id']}/lease", headers=auth,
                                         json={"max_tasks": 1, "wait_s": 0})
                times["lease"].append(time.perf_counter() - t0)
                for task in answer.json()["tasks"]:
                    await http.post(f"/api/v1/workers/{worker['id']}/reports", headers=auth, json={"events": [
                        {"task_id": task["task_id"], "attempt_id": task["attempt_id"], "event": "succeeded"}]})
                await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))

        async def watch() -> None:
            while not await until():
                await asyncio.sleep(1)
            stop.set()

        await asyncio.gather(submitter(), leaser(), watch())
    return times


def start(servers: EmbeddedServers, state: Path, retention_days: int) -> tuple[Child, str]:
    """`aidd --serve` on the bench stores with this retention window; its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = python_env(AIDD_REDIS_URL=servers.redis_url, AIDD_DATABASE_URL=servers.database_url,
                     AIDD_STATE_DIR=str(state), AIDD_KEY_PREFIX="retbench",
                     AIDD_TASK_RETENTION_DAYS=str(retention_days))
    child = spawn(f"coordinator-{retention_days}", python("-m", "aiddclient.cli", "--serve", "--port", str(port)),
                  env, state)

    def healthy() -> bool:
        try:
            return httpx.get(url + "/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(healthy, 300, "the coordinator", interval=0.3, children=[child])
    return child, url


async def scalar(database_url: str, query: Any) -> float:
    """One number from PostgreSQL (0 for NULL)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return float((await conn.execute(query)).scalar() or 0)
    finally:
        await engine.dispose()


def run(args: argparse.Namespace, servers: EmbeddedServers, state: Path) -> dict[str, Any]:
    started = time.perf_counter()
    asyncio.run(seed(servers.database_url, args.tasks))
    print(f"seeded {args.tasks:,} tasks in {time.perf_counter() - started:.0f} s; oldest finished "
          f"{asyncio.run(scalar(servers.database_url, OLDEST)):.0f} days ago", flush=True)
    child, url = start(servers, state, 0)
    try:
        deadline = time.monotonic() + args.seconds

        async def reference_over() -> bool:
            return time.monotonic() > deadline
        reference = asyncio.run(load(url, args.rate, reference_over))
    finally:
        child.stop()
    rows_before = asyncio.run(scalar(servers.database_url, ROWS))
    child, url = start(servers, state, WINDOW_DAYS)
    began = time.perf_counter()
    try:
        engine_url = servers.database_url
        cap = time.monotonic() + args.max_seconds

        async def deleted() -> bool:
            return await scalar(engine_url, OLDEST) <= WINDOW_DAYS + SLACK_DAYS or time.monotonic() > cap
        during = asyncio.run(load(url, args.rate, deleted))
    finally:
        child.stop()
    took = time.perf_counter() - began
    return {"reference": reference, "during": during, "deletion_s": took,
            "oldest_after": asyncio.run(scalar(servers.database_url, OLDEST)),
            "deleted": rows_before + len(during["submit"]) - asyncio.run(scalar(servers.database_url, ROWS))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30, help="length of the reference phase")
    parser.add_argument("--rate", type=float, default=20, help="submissions and leases per second, each")
    parser.add_argument("--max-seconds", type=float, default=1800, help="longest the deletion phase may run")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aidd-bench-retention-") as tmp:
        state = Path(tmp)
        state.chmod(0o755)
        servers = start_embedded(state)
        try:
            result = run(args, servers, state)
        finally:
            servers.stop()
    print(f"\nload average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    print(f"deletion: {result['deleted']:,.0f} tasks in {result['deletion_s']:.0f} s "
          f"({result['deleted'] / result['deletion_s']:,.0f} tasks/s, with their attempts and log lines; "
          f"oldest left {result['oldest_after']:.1f} days)")
    print("| phase | submit p50 / p99 / max | lease p50 / p99 / max |")
    print("|---|---|---|")
    for phase in ("reference", "during"):
        r = result[phase]
        print(f"| {phase} | {summary(r['submit'])} | {summary(r['lease'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
