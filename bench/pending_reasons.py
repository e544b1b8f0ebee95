"""What saying why every pending task waits costs: task lists, a filter by reason, the Queues pane's summary.

    python -m bench.pending_reasons [--tasks 100000] [--workers 500] [--rounds 20]

Starts the embedded Redis + PostgreSQL, writes the tasks and workers of `bench.console_refresh` straight into
PostgreSQL (a quarter of the tasks pending, over three services, two groups and three priorities), moves a tenth
of the pending ones to a group no worker serves, builds the index, and times in one process, over the
coordinator service itself (no HTTP): a page of 1 000 pending tasks with their reasons (snapshot warm, and taken
afresh), the same page without reasons (the reference), the per-shape snapshot alone, a page filtered by reason,
and `/stats/queues`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.console_refresh import seed


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(what: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, Any]:
    """Median wall time of `rounds` calls (ms) and the last result."""
    samples, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = await what()
        samples.append(time.perf_counter() - started)
    return median_ms(samples), result


async def orphan_some(database_url: str) -> None:
    """A tenth of the pending tasks into group `nobody` (no worker serves it): something for the filter to find."""
    from sqlalchemy import text

    from coordinator.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("""UPDATE tasks SET "group" = 'nobody'
                                       WHERE status = 'pending' AND seq % 10 = 0"""))
    finally:
        await engine.dispose()


async def measure(redis_url: str, database_url: str, state: Path, rounds: int) -> None:
    from coordinator.config import Settings
    from coordinator.pending import PendingReason
    from coordinator.schemas import TaskFilter
    from coordinator.service import Coordinator
    from coordinator.states import ReasonCode, TaskStatus

    service = Coordinator.build(Settings(state_dir=state, redis_url=redis_url, database_url=database_url))
    await service.start(timers=False)
    try:
        tasks, reasons = service.tasks, service.tasks.reasons
        pending = TaskFilter(status=[TaskStatus.PENDING])

        async def page() -> dict[str, Any]:
            return await tasks.page(pending, page_size=1000)

        async def cold_page() -> dict[str, Any]:
            reasons._snapshot = None
            return await page()

        async def cold_snapshot() -> Any:
            reasons._snapshot = None
            return await reasons.snapshot()

        warm_ms, listed = await timed(page, rounds)
        cold_ms, _ = await timed(cold_page, rounds)
        snap_ms, snap = await timed(cold_snapshot, rounds)
        original = reasons.for_tasks

        async def none_for(rows: Sequence[Any]) -> list[PendingReason | None]:
            return [None] * len(rows)
        reasons.for_tasks = none_for  # type: ignore[method-assign]
        bare_ms, _ = await timed(page, rounds)
        reasons.for_tasks = original  # type: ignore[method-assign]
        stuck = TaskFilter(status=[TaskStatus.PENDING], pending_reason=[ReasonCode.NO_GROUP])
        filter_ms, filtered = await timed(lambda: tasks.page(stuck, page_size=100), rounds)
        queues_ms, queues = await timed(service.stats.queues, rounds)
        codes: dict[str, int] = {}
        for item in listed["items"]:
            codes[item["pending_reason"]["code"]] = codes.get(item["pending_reason"]["code"], 0) + 1
        print(f"{listed['total']} pending tasks, {len(snap.workers)} workers not offline; first page's reasons: "
              f"{codes}")
        print(f"page of 1000 pending tasks with reasons (snapshot warm)   {warm_ms:7.1f} ms")
        print(f"page of 1000 pending tasks with reasons (snapshot afresh) {cold_ms:7.1f} ms")
        print(f"page of 1000 pending tasks without reasons (reference)    {bare_ms:7.1f} ms  "
              f"(warm costs {warm_ms / bare_ms:.2f}x)")
        print(f"the snapshot alone (workers and their running tasks)      {snap_ms:7.1f} ms")
        print(f"page of 100 filtered by reason no_group ({filtered['total']} match)     {filter_ms:7.1f} ms")
        print(f"/stats/queues with the reasons per service                {queues_ms:7.1f} ms  "
              f"e.g. {queues[0]['service']}: {queues[0]['waiting'][:1]}")
    finally:
        await service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    from coordinator.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="aidd-bench-reasons-") as tmp:
        state = Path(tmp)
        state.chmod(0o755)
        servers = start_embedded(state)
        try:
            started = time.perf_counter()
            asyncio.run(seed(servers.database_url, args.tasks, args.workers))
            asyncio.run(orphan_some(servers.database_url))
            print(f"seeded {args.tasks} tasks and {args.workers} workers in {time.perf_counter() - started:.1f}s")
            asyncio.run(measure(servers.redis_url, servers.database_url, state, args.rounds))
        finally:
            servers.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
