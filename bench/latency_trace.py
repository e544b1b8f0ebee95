"""Where submit -> start goes: one task at a time, as `bench.compare` measures it, with every hop timestamped.

    .venv/bin/python -m bench.latency_trace [--tasks 200] [--slots 256] [--flush-ms 0]

The same setup as `bench.compare`'s latency part (`aidd --serve` and one agent process on the embedded Redis and
PostgreSQL, the `stamp` plugin). Both processes start with `bench/trace/` on their path: its `sitecustomize`
wraps the functions on the path (see `HOOKS` there) to append `<event> <epoch time>` lines to a file (`>` a call,
`<` its return). The table shows when each event happened after the submit call, up to the plugin's own stamp (the
start); an event seen again in the same task is `#2`, `#3`. The previous task is over by then: the bench waits for
its end, as `bench.compare` does. The wrappers cost a few microseconds each: the totals are a little above
`bench.compare`'s. Read it as a sequence of medians (each row's own), not as one task's timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from bench.compare import flush_delay_arg, slow_flushes
from bench.harness import percentile
from bench.ours import Ours
from coordinator.embedded import start_embedded

TRACE_PATH = Path(__file__).resolve().parent / "trace"


def trace(tasks: int, slots: int, state: Path, flush_ms: float = 0.0) -> list[dict[str, float]]:
    """Run `tasks` single tasks (after 20 warm-up ones); returns each one's events as ms after its submit call
    (an event seen again in the same task gets ` #2`, ` #3`, ...)."""
    log_dir = state / "logs"
    log_dir.mkdir()
    events = state / "events.txt"
    servers = start_embedded(state / ("embedded-on-tcp-loopback-" + "x" * 80))
    if flush_ms:
        asyncio.run(slow_flushes(servers.database_url, flush_ms))
    ours = Ours(servers.redis_url, servers.database_url, state, log_dir, max_pending=10_000, stores={})
    ours.env["PYTHONPATH"] = f"{TRACE_PATH}:{ours.env['PYTHONPATH']}"
    ours.env["AIDD_TRACE_FILE"] = str(events)
    sent_at: list[float] = []
    per_task: list[dict[str, float]] = []
    try:
        ours.start()
        ours.drain(200, slots, 120)  # pools and caches fill, as in bench.compare
        for sent, answered, task in ours.single_tasks(tasks, slots):
            sent_at.append(sent)
            per_task.append({"client: answered": answered, "plugin: stamp (start)": float(task["result"]["started"]),
                             "coordinator: finished_at": datetime.fromisoformat(task["finished_at"]).timestamp()})
    finally:
        ours.stop()
        servers.stop()
    stamps = sorted((float(at), name) for name, at in (line.split() for line in events.read_text().splitlines()))
    for marks, start in zip(per_task, sent_at, strict=True):
        seen: dict[str, int] = defaultdict(int)
        for at, name in stamps:  # up to the start: what comes later overlaps the next task's submit
            if start <= at <= marks["plugin: stamp (start)"]:
                seen[name] += 1
                marks[f"{name} #{seen[name]}" if seen[name] > 1 else name] = at
    return [{name: (at - start) * 1000 for name, at in marks.items()} for marks, start in zip(per_task, sent_at,
                                                                                              strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--flush-ms", type=flush_delay_arg, default=0.0, help="a slower disk, as in bench.compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aidd-trace-") as tmp:
        tasks = trace(args.tasks, args.slots, Path(tmp), args.flush_ms)
    offsets: dict[str, list[float]] = defaultdict(list)
    for marks in tasks:
        for name, ms in marks.items():
            offsets[name].append(ms)
    print(f"{len(tasks)} single tasks; ms after the submit call; n: the tasks an event was seen in (up to the start)")
    print(f"  {'event':<44} {'p50':>7} {'p90':>7} {'p99':>7}  n")
    for name, values in sorted(offsets.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"  {name:<44} {percentile(values, 50):7.2f} {percentile(values, 90):7.2f} "
              f"{percentile(values, 99):7.2f}  {len(values)}")


if __name__ == "__main__":
    main()
