"""Cost of a Prometheus scrape with a long history in the store.

    python -m bench.metrics_scrape [--tasks 100000,1000000] [--workers 200] [--scrapes 200]

For each size: seeds the store (`bench.history`: that many task rows, 2 000 running and 20 000 pending, the rest
finished over 200 days, with attempts and log lines), starts `aidd --serve` with production timers (it leads, so
it refreshes the cluster snapshot every 5 s), waits for the leader's gauges, then times `GET /metrics` over HTTP
`--scrapes` times, one after another. The server's own time per scrape comes from its request histogram.
Timed in this process on the same store: the leader's snapshot refresh (`stats.read_cluster`, every 5 s) and,
as the reference, what the old `/metrics` ran on every scrape (`StatsService.queues` + `task_counts`, a GROUP BY
over the whole task table). Target (issue 14): a scrape ≤ 20 ms at 1 M task rows.
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
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import free_port, python, python_env, spawn, wait_for
from bench.history import seed
from coordinator.config import Settings
from coordinator.embedded import EmbeddedServers, start_embedded
from coordinator.service import Coordinator
from coordinator.stats import read_cluster


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def server_mean_ms(exposition: str) -> float:
    """Mean duration of the `/metrics` requests the server timed itself (from its histogram)."""
    total = count = 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name == "aidd_http_request_duration_seconds":
            for s in family.samples:
                if s.labels.get("route") == "/metrics":
                    if s.name.endswith("_sum"):
                        total += s.value
                    elif s.name.endswith("_count"):
                        count += s.value
    return 1000 * total / count if count else float("nan")


async def in_process(redis_url: str, database_url: str, rounds: int) -> dict[str, list[float]]:
    """Times of the leader's snapshot refresh, and of the old per-scrape queries (the reference)."""
    coordinator = Coordinator.build(Settings(redis_url=redis_url, database_url=database_url))
    times: dict[str, list[float]] = {"snapshot": [], "old_scrape": []}
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            await read_cluster(coordinator.core, coordinator.workers)
            times["snapshot"].append(time.perf_counter() - started)
        for _ in range(max(3, rounds // 4)):
            started = time.perf_counter()
            await coordinator.stats.queues()
            await coordinator.stats.task_counts()
            await coordinator.workers.overview()
            times["old_scrape"].append(time.perf_counter() - started)
    finally:
        await coordinator.core.redis.aclose()
        await coordinator.core.engine.dispose()
    return times


def measure(tasks: int, servers: EmbeddedServers, state: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Seed `tasks` rows, scrape a real coordinator, time the snapshot and the reference."""
    started = time.perf_counter()
    asyncio.run(seed(servers.database_url, tasks, workers=args.workers))
    seeded_s = time.perf_counter() - started
    print(f"seeded {tasks:,} tasks and {args.workers} workers in {seeded_s:.0f} s", flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = python_env(AIDD_REDIS_URL=servers.redis_url, AIDD_DATABASE_URL=servers.database_url,
                     AIDD_STATE_DIR=str(state), AIDD_KEY_PREFIX=f"bench{tasks}", AIDD_TASK_RETENTION_DAYS="0")
    child = spawn(f"coordinator-{tasks}", python("-m", "aiddclient.cli", "--serve", "--port", str(port)), env,
                  state)
    scrape_s: list[float] = []
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            def leading() -> bool:
                try:
                    return "aidd_tasks_pending{" in http.get("/metrics").text
                except httpx.HTTPError:
                    return False
            wait_for(leading, 300, "the leader's cluster gauges", interval=0.5, children=[child])
            for _ in range(10):  # warm-up
                http.get("/metrics")
            for _ in range(args.scrapes):
                t0 = time.perf_counter()
                reply = http.get("/metrics")
                scrape_s.append(time.perf_counter() - t0)
            exposition = reply.text
    finally:
        child.stop()
    refresh = asyncio.run(in_process(servers.redis_url, servers.database_url, args.rounds))
    series = sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))
    return {"tasks": tasks, "scrape_p50_ms": 1000 * statistics.median(scrape_s),
            "scrape_p99_ms": 1000 * percentile(scrape_s, 0.99), "server_mean_ms": server_mean_ms(exposition),
            "series": series, "bytes": len(exposition),
            "snapshot_p50_ms": 1000 * statistics.median(refresh["snapshot"]),
            "snapshot_max_ms": 1000 * max(refresh["snapshot"]),
            "old_scrape_ms": 1000 * statistics.median(refresh["old_scrape"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20, help="snapshot refreshes timed in this process")
    args = parser.parse_args()
    sizes = [int(n) for n in args.tasks.split(",")]
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="aidd-bench-metrics-") as tmp:
        state = Path(tmp)
        state.chmod(0o755)
        servers = start_embedded(state)
        try:
            for tasks in sizes:
                results.append(measure(tasks, servers, state, args))
        finally:
            servers.stop()
    print(f"\nload average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cores")
    print("| task rows | scrape p50 | scrape p99 | server mean | series | snapshot refresh p50 / max | "
          "old /metrics (reference) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['tasks']:,} | {r['scrape_p50_ms']:.1f} ms | {r['scrape_p99_ms']:.1f} ms | "
              f"{r['server_mean_ms']:.1f} ms | {r['series']} ({r['bytes'] // 1024} KiB) | "
              f"{r['snapshot_p50_ms']:.1f} / {r['snapshot_max_ms']:.1f} ms | {r['old_scrape_ms']:.0f} ms | "
              f"{r['old_scrape_ms'] / r['scrape_p50_ms']:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
