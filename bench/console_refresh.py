"""The console on a big store: CPU of one full refresh of all panes, and the console's RSS.

    python -m bench.console_refresh [--tasks 100000] [--workers 500] [--rounds 15]

Starts the embedded Redis + PostgreSQL, writes the tasks and workers straight into PostgreSQL (one
INSERT ... SELECT), runs the coordinator as its own process (`aidd --serve`, production timers) and a
heartbeat sender for every worker (one heartbeat per worker every 10 s, like real agents), then measures
in a separate console process: for each of Queues, Workers, Tasks and Batches, the CPU time from asking
for a poll to having applied and rendered it; the sum is one full refresh. The reference, measured in
the same console process, is the CPU of the same API calls made with the bare client (no UI).
Targets (issue 4): median full refresh ≤ 100 ms of CPU, console RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PANES = (("1", "queues"), ("2", "workers"), ("3", "tasks"), ("4", "batches"))
GPU_EVERY = 5
"""Every fifth worker has four GPUs; the running tasks on it hold one each (named on its GPU rows)."""


def token(i: int) -> str:
    """The known token of bench worker i (the heartbeat sender authenticates with it)."""
    return f"bench-token-{i:04d}"


def worker_id(i: int) -> uuid.UUID:
    """The id of bench worker i."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"aidd-bench/worker/{i}")


SEED_TASKS = """
INSERT INTO tasks (id, service, task_type, name, input_params, priority, "group", labels, cpu, memory_gb, gpu,
    gpu_memory_gb, max_retries, timeout_s, retry_on, input_files, outputs, batch_id, submitted_by, status,
    attempt_id, attempts, retry_count, worker_losses, worker_id, gpus, error, end_reason, created_at,
    started_at, finished_at, updated_at)
SELECT gen_random_uuid(), (ARRAY['admet','docking','inference'])[1 + g % 3],
    (ARRAY['qikprop','vina','reinvent'])[1 + g % 3], 'bench task ' || g,
    jsonb_build_object('smiles', 'C' || repeat('C', g % 20) || 'O'), 1 + g % 3,
    CASE WHEN g % 3 = 0 THEN 'default' ELSE 'gpu' END, '[]', 1, 1,
    CASE WHEN s.status = 'running' AND g % CAST(:nworkers AS int) % CAST(:gpu_every AS int) = 0 THEN 1 ELSE 0 END,
    0, 3, 300,
    '["error","timeout","worker_lost"]', '[]', '[]',
    CASE WHEN g <= CAST(:batched AS int) THEN (CAST(:batches AS uuid[]))[1 + g % 20] END, 'bench',
    s.status, CASE WHEN s.status = 'running' THEN gen_random_uuid() END,
    CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END, 0, 0,
    CASE WHEN s.status <> 'pending' THEN (CAST(:workers AS uuid[]))[1 + g % CAST(:nworkers AS int)] END,
    CASE WHEN s.status = 'running' AND g % CAST(:nworkers AS int) % CAST(:gpu_every AS int) = 0
         THEN jsonb_build_array(g / CAST(:nworkers AS int) % 4) ELSE '[]' END,
    CASE WHEN s.status IN ('failed', 'timeout') THEN 'bench failure ' || g END,
    CASE WHEN s.status IN ('succeeded', 'failed', 'timeout', 'cancelled') THEN s.status END,
    now() - make_interval(secs => CAST(:tasks AS int) - g),
    now() - make_interval(secs => (CAST(:tasks AS int) - g) / 2),
    CASE WHEN s.status IN ('succeeded', 'failed', 'timeout', 'cancelled')
         THEN now() - make_interval(secs => g % 3600) END, now()
FROM generate_series(1, CAST(:tasks AS int)) AS g,
LATERAL (SELECT CASE WHEN g % 100 < 70 THEN 'succeeded' WHEN g % 100 < 72 THEN 'failed'
                     WHEN g % 100 = 72 THEN 'timeout' WHEN g % 100 = 73 THEN 'cancelled'
                     WHEN g % 100 = 74 THEN 'running' ELSE 'pending' END AS status) AS s
"""


async def seed(database_url: str, tasks: int, workers: int) -> None:
    """Write the workers, 20 batches and the tasks straight into PostgreSQL."""
    from sqlalchemy import insert, text

    from coordinator.db import create_engine, migrate
    from coordinator.models import Batch, Worker
    from coordinator.workers import hash_token

    engine = create_engine(database_url)
    try:
        await migrate(engine)
        batches = [uuid.uuid4() for _ in range(20)]
        async with engine.begin() as conn:
            await conn.execute(insert(Worker), [{
                "id": worker_id(i), "hostname": f"bench-{i:04d}", "token_hash": hash_token(token(i)),
                "services": [], "groups": ["gpu"] if i % GPU_EVERY == 0 else ["default"], "labels": [],
                "cpu_cores": 64, "memory_gb": 256, "slots": 16, "status": "online", "metrics": {},
                "gpus": [{"index": g, "name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80}
                         for g in range(4 if i % GPU_EVERY == 0 else 0)]} for i in range(workers)])
            batched = tasks * 6 // 10
            await conn.execute(insert(Batch), [{"id": b, "name": f"bench batch {n}", "total": batched // 20}
                                               for n, b in enumerate(batches)])
            await conn.execute(text(SEED_TASKS), {"tasks": tasks, "batched": batched, "batches": batches,
                                                  "workers": [worker_id(i) for i in range(workers)],
                                                  "nworkers": workers, "gpu_every": GPU_EVERY})
            await conn.execute(text("ANALYZE tasks"))
    finally:
        await engine.dispose()


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, timeout: float = 120) -> None:
    """Wait until the coordinator answers its health check."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the coordinator at {url} did not come up")


# -- the heartbeat sender (its own process) ---------------------------------------------------------

async def send_heartbeats(url: str, workers: int, interval: float) -> None:
    """One heartbeat per worker every `interval` seconds, spread evenly, with changing telemetry."""
    import httpx

    rng = random.Random(1)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while True:
            for i in range(workers):
                started = time.monotonic()
                gpus = [{"index": g, "utilization": rng.uniform(0, 100), "memory_used_gb": rng.uniform(1, 80),
                         "memory_total_gb": 80, "temperature": rng.uniform(35, 80)}
                        for g in range(4 if i % GPU_EVERY == 0 else 0)]
                body = {"used_cpu": rng.uniform(0, 64), "used_memory_gb": rng.uniform(4, 200), "gpus": gpus}
                try:
                    await http.post(f"/api/v1/workers/{worker_id(i)}/heartbeat", json=body,
                                    headers={"Authorization": f"Bearer {token(i)}"})
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(max(0.0, interval / workers - (time.monotonic() - started)))


# -- the console probe (its own process) ------------------------------------------------------------

async def probe(url: str, rounds: int) -> dict[str, Any]:
    """Measure full refreshes of the four panes in a headless console; and the bare client's reference."""
    import psutil

    from aiddclient.client import CoordinatorClient
    from console.factory import make_app
    from console.screens.live import LiveScreen

    client = CoordinatorClient(url, timeout=60)
    app = make_app(client, refresh_s=3600, animation_level="none", freeze_gc=True)  # as `aidd` runs it
    per_pane: dict[str, list[float]] = {name: [] for _, name in PANES}
    walls: list[float] = []
    totals: list[float] = []
    peak = 0
    async with app.run_test(size=(120, 40)) as pilot:
        for round_ in range(rounds + 1):  # round 0 fills the tables and is not counted
            total = 0.0
            wall = 0.0
            for key, name in PANES:
                await pilot.press(key)
                await pilot.pause()
                screen = app.screen
                assert isinstance(screen, LiveScreen)
                while screen.polling:  # the poll that showing the pane started: not measured
                    await pilot.pause(0.01)
                await pilot.pause()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await screen.next_refresh()
                await pilot.pause()  # the render of what was applied
                cpu, spent = time.process_time() - cpu0, time.perf_counter() - wall0
                if round_:
                    per_pane[name].append(cpu * 1000)
                    total += cpu * 1000
                    wall += spent * 1000
            if round_:
                totals.append(total)
                walls.append(wall)
            peak = max(peak, psutil.Process().memory_info().rss)
        rss = psutil.Process().memory_info().rss
        rows = {name: app.get_screen_stack(name)[0].query_one("KeyedTable").row_count  # type: ignore[attr-defined]
                for _, name in PANES}
    reference: list[float] = []
    async with CoordinatorClient(url, timeout=60) as bare:
        for _ in range(rounds):
            cpu0 = time.process_time()
            await bare.dashboard()
            await bare.tasks(page=1, page_size=12, sort="-finished_at", status=["failed", "timeout"])
            await bare.workers()
            await bare.tasks(page=1, page_size=100, sort="-created_at")
            await bare.batches(limit=200)
            reference.append((time.process_time() - cpu0) * 1000)
    return {"totals": totals, "walls": walls, "per_pane": per_pane, "rss_mb": rss / 2**20,
            "peak_rss_mb": peak / 2**20, "reference": reference, "rows": rows}


# -- the orchestration ------------------------------------------------------------------------------

def main() -> int:
    """Parse arguments; run a role (heartbeats, probe) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--heartbeat-interval", type=float, default=10.0)
    parser.add_argument("--role", choices=["all", "heartbeats", "probe"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "heartbeats":
        asyncio.run(send_heartbeats(args.url, args.workers, args.heartbeat_interval))
        return 0
    if args.role == "probe":
        print(json.dumps(asyncio.run(probe(args.url, args.rounds))))
        return 0
    return run_all(args)


def run_all(args: argparse.Namespace) -> int:
    """Stores, seed, coordinator, heartbeats, then the console probe; print the figures."""
    from coordinator.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="aidd-bench-console-") as tmp:
        state = Path(tmp)
        state.chmod(0o755)
        servers = start_embedded(state)
        children: list[subprocess.Popen[bytes]] = []
        try:
            started = time.perf_counter()
            asyncio.run(seed(servers.database_url, args.tasks, args.workers))
            print(f"seeded {args.tasks} tasks and {args.workers} workers in {time.perf_counter() - started:.1f}s",
                  flush=True)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "AIDD_REDIS_URL": servers.redis_url, "AIDD_DATABASE_URL": servers.database_url,
                   "AIDD_STATE_DIR": str(state), "PYTHONPATH": str(ROOT)}
            children.append(subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "--serve", "--port",
                                              str(port)], env=env, cwd=ROOT, stderr=subprocess.DEVNULL))
            wait_healthy(url)
            children.append(subprocess.Popen([sys.executable, "-m", "bench.console_refresh", "--role",
                                              "heartbeats", "--url", url, "--workers", str(args.workers),
                                              "--heartbeat-interval", str(args.heartbeat_interval)],
                                             env=env, cwd=ROOT))
            time.sleep(2)
            done = subprocess.run([sys.executable, "-m", "bench.console_refresh", "--role", "probe", "--url", url,
                                   "--rounds", str(args.rounds)], env=env, cwd=ROOT, capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            report(json.loads(done.stdout.strip().splitlines()[-1]), args)
        finally:
            for child in reversed(children):
                child.terminate()
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
            servers.stop()
    return 0


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the figures."""
    totals, reference = result["totals"], result["reference"]
    median, ref = statistics.median(totals), statistics.median(reference)
    p90 = sorted(totals)[max(0, int(len(totals) * 0.9) - 1)]
    print(f"store: {args.tasks} tasks, {args.workers} workers ({args.workers // GPU_EVERY} with 4 GPUs), "
          f"heartbeats every {args.heartbeat_interval:.0f}s per worker; table rows: {result['rows']}")
    print(f"full refresh of all 4 panes, CPU ms: median {median:.1f}, p90 {p90:.1f}, min {min(totals):.1f} "
          f"over {len(totals)} rounds (target <= 100)")
    print("  per pane, median CPU ms: " + ", ".join(
        f"{name} {statistics.median(values):.1f}" for name, values in result["per_pane"].items()))
    print(f"  wall ms per full refresh (includes waiting on the coordinator): median "
          f"{statistics.median(result['walls']):.0f}")
    print(f"reference, the same API calls with the bare client: median {ref:.1f} CPU ms "
          f"(console / bare = {median / ref:.2f}x)")
    print(f"console RSS: {result['rss_mb']:.0f} MB at the end, peak {result['peak_rss_mb']:.0f} MB (target <= 300)")


if __name__ == "__main__":
    raise SystemExit(main())
