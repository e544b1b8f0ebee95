"""The coordinator at scale: heartbeat capacity of one process, its memory, and the console's refresh cost.

    .venv/bin/python -m bench.scale [--tasks 100000] [--workers 500] [--step-seconds 8] [--max-rate 8000]
                                    [--no-console] [--json scale.json]

Starts the embedded Redis + PostgreSQL, writes 100 000 tasks and 500 workers straight into PostgreSQL
(the store `bench.console_refresh` uses: 70 % succeeded, 1 % running on the workers, 25 % pending, ...),
runs `aidd --serve` in its own process, then sends heartbeats over real HTTP from this process
(`bench.loadgen`: open loop, latency from when each request was due). Each heartbeat is what an agent
sends: CPU, memory, four GPUs on every fifth worker, and the worker's running tasks.

- First the real load: 500 workers every 10 s (50 requests/s).
- Then rising rates, each for `--step-seconds`, until p99 >= 50 ms (or errors, or the generator cannot
  keep the rate) twice in a row at the same rate (a stall from elsewhere on a shared machine must not end
  the search). The capacity is the highest rate served with p99 < 50 ms.
- The coordinator's RSS is sampled throughout.
- `python -m bench.console_refresh` (the console issue's benchmark) is run afterwards when present, and its
  figures are included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.harness import REPO, free_port, python, python_env, spawn, wait_for
from bench.loadgen import Pool, Request, StepResult, run_step

P99_LIMIT_MS = 50.0
RATES = (250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 8000)


def heartbeat_bodies(workers: int, running: dict[str, list[str]], gpu_every: int, variants: int = 4,
                     ) -> list[list[bytes]]:
    """A few encoded heartbeats per worker (telemetry varies between them, as it does)."""
    from bench.console_refresh import worker_id

    rng = random.Random(7)
    bodies = []
    for i in range(workers):
        tasks = running.get(str(worker_id(i)), [])
        mine = []
        for _ in range(variants):
            gpus = [{"index": g, "utilization": round(rng.uniform(0, 100), 1),
                     "memory_used_gb": round(rng.uniform(1, 80), 2), "memory_total_gb": 80,
                     "temperature": round(rng.uniform(35, 80), 1)} for g in range(4 if i % gpu_every == 0 else 0)]
            mine.append(orjson.dumps({
                "used_cpu": round(rng.uniform(0, 64), 2), "cpu_percent": round(rng.uniform(0, 100), 1),
                "used_memory_gb": round(rng.uniform(4, 200), 2), "gpus": gpus, "current_tasks": tasks,
                "tasks": [{"task_id": t, "pid": 1000 + n, "gpus": []} for n, t in enumerate(tasks)]}))
        bodies.append(mine)
    return bodies


async def running_tasks(database_url: str) -> dict[str, list[str]]:
    """Running task ids by worker id, as PostgreSQL has them; they are made to have started just now.

    The seed's running tasks started long ago, past their timeout: the coordinator would time them out at
    once, and the heartbeats, which go on listing them, would then each cost a check in PostgreSQL.
    """
    from sqlalchemy import text

    from coordinator.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE tasks SET started_at = now() WHERE status = 'running'"))
            rows = (await conn.execute(text("SELECT worker_id, id FROM tasks WHERE status = 'running'"))).all()
    finally:
        await engine.dispose()
    found: dict[str, list[str]] = {}
    for worker, task in rows:
        found.setdefault(str(worker), []).append(str(task))
    return found


class RssSampler:
    """Samples a process's RSS every 0.2 s on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.last = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def measure(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """Seed, start the coordinator, run the heartbeat steps; the figures."""
    from bench.console_refresh import GPU_EVERY, seed, token, worker_id
    from coordinator.embedded import start_embedded

    log_dir = state / "logs"
    log_dir.mkdir()
    servers = start_embedded(state / ("embedded-on-tcp-loopback-" + "x" * 80))
    out: dict[str, Any] = {"tasks": args.tasks, "workers": args.workers, "step_seconds": args.step_seconds}
    try:
        started = time.perf_counter()
        asyncio.run(seed(servers.database_url, args.tasks, args.workers))
        running = asyncio.run(running_tasks(servers.database_url))
        out["seed_s"] = time.perf_counter() - started
        port = free_port()
        env = python_env(AIDD_REDIS_URL=servers.redis_url, AIDD_DATABASE_URL=servers.database_url,
                         AIDD_STATE_DIR=str(state / "coordinator"))
        server = spawn("coordinator", python("-m", "aiddclient.cli", "--serve", "--port", str(port)), env, log_dir)
        try:
            import httpx

            def healthy() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False
            wait_for(healthy, 120, "the coordinator", children=[server])
            out["coordinator_rss_idle_mb"] = psutil.Process(server.pid).memory_info().rss / 2**20
            bodies = heartbeat_bodies(args.workers, running, GPU_EVERY)
            paths = [f"/api/v1/workers/{worker_id(i)}/heartbeat" for i in range(args.workers)]
            auth = [(("Authorization", f"Bearer {token(i)}"),) for i in range(args.workers)]

            def make(i: int) -> Request:
                w = i % args.workers
                return paths[w], bodies[w][(i // args.workers) % len(bodies[w])], auth[w]
            # The generator's own pauses would count as the server's latency: no collector while it runs.
            gc.collect()
            gc.disable()
            try:
                with RssSampler(server.pid) as rss:
                    out["steps"] = asyncio.run(steps(port, make, args, psutil.Process(server.pid)))
            finally:
                gc.enable()
            if any(step["errors"] for step in out["steps"]):
                out["coordinator_log_tail"] = server.tail(30)
            out["coordinator_rss_peak_mb"] = rss.peak / 2**20
            out["coordinator_rss_end_mb"] = rss.last / 2**20
        finally:
            server.stop()
    finally:
        servers.stop()
    ok = [s for s in out["steps"][1:] if _passes(s)]
    out["capacity_rps"] = max((s["achieved_rate"] for s in ok), default=0.0)
    return out


def _passes(step: dict[str, Any]) -> bool:
    return bool(step["latency"]["p99_ms"] < P99_LIMIT_MS and step["errors"] == 0
                and step["achieved_rate"] >= 0.95 * step["target_rate"])


async def steps(port: int, make: Any, args: argparse.Namespace, server: psutil.Process) -> list[dict[str, Any]]:
    """The real load first (every worker every 10 s), then rising rates until p99 >= 50 ms."""
    results: list[dict[str, Any]] = []
    pool = Pool("127.0.0.1", port)
    # Warm-up, not counted: every worker beats once (tokens and commands looked up, connections open), as
    # a coordinator that has been running a while has done.
    await run_step(pool, make, 100.0, args.workers / 100.0, in_flight=32)
    rates = [args.workers / 10.0, *(r for r in RATES if r <= args.max_rate)]
    for n, rate in enumerate(rates):
        for attempt in (1, 2):  # a failed step runs once more: one stall from elsewhere must not end the search
            cpu = sum(server.cpu_times()[:2])
            step = await run_step(pool, make, rate, max(20.0, args.step_seconds) if n == 0 else args.step_seconds)
            used = sum(server.cpu_times()[:2]) - cpu
            label = "real load (every worker every 10 s)" if n == 0 else f"step (try {attempt})"
            results.append(_show(label, step, used))
            await asyncio.sleep(1.0)
            if n == 0 or _passes(results[-1]):
                break
        if n and not _passes(results[-1]):
            break
    pool.close()
    return results


def _show(label: str, step: StepResult, cpu_s: float) -> dict[str, Any]:
    data = asdict(step)
    data["coordinator_cpu_ms_per_request"] = cpu_s * 1000 / max(1, step.sent)
    lat = step.latency
    print(f"  {label}: target {step.target_rate:,.0f}/s, achieved {step.achieved_rate:,.0f}/s, "
          f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms, "
          f"errors {step.errors}; coordinator CPU {data['coordinator_cpu_ms_per_request']:.2f} ms/request",
          flush=True)
    return data


def console_figures() -> dict[str, Any]:
    """Run bench.console_refresh (someone else's benchmark) when it exists; its printed figures."""
    if not (REPO / "bench" / "console_refresh.py").exists():
        return {"skipped": "bench/console_refresh.py not present"}
    done = subprocess.run(python("-m", "bench.console_refresh"), cwd=REPO, env=python_env(), capture_output=True,
                          text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"exit_code": done.returncode, "lines": lines, "stderr_tail": done.stderr[-2000:] if done.returncode else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--max-rate", type=float, default=8000)
    parser.add_argument("--no-console", action="store_true", help="skip bench.console_refresh")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="keep the state dir (and logs) here")
    args = parser.parse_args()
    print(f"{args.tasks} tasks, {args.workers} workers; heartbeats over HTTP, open loop", flush=True)
    with tempfile.TemporaryDirectory(prefix="aidd-scale-") as tmp:
        state = Path(tmp)
        if args.keep_logs:
            state = args.keep_logs
            state.mkdir(parents=True)
        state.chmod(0o755)
        out = measure(args, state)
    print(f"heartbeat capacity of one coordinator process at p99 < {P99_LIMIT_MS:.0f} ms: "
          f"{out['capacity_rps']:,.0f} requests/s (target >= 2000)")
    print(f"coordinator RSS: {out['coordinator_rss_idle_mb']:.0f} MB idle with the store loaded, peak "
          f"{out['coordinator_rss_peak_mb']:.0f} MB under load")
    if not args.no_console:
        print("console refresh (python -m bench.console_refresh):", flush=True)
        out["console_refresh"] = console_figures()
        for line in out["console_refresh"].get("lines", [out["console_refresh"].get("skipped", "")]):
            print(f"  {line}")
    if args.json:
        out["argv"] = sys.argv
        out["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
