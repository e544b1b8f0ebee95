"""CPU per no-op task of the warm plugin path alone: `TaskRun`s through a `PluginPool`, as the agent runs them
(on uvloop, as the agent does).

No coordinator, no HTTP: what the agent's process and its plugin hosts spend per task between a lease and
its report, with `--in-flight` tasks at once (the agent's slots). `python -m bench.warm_pool --tasks 5000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from pathlib import Path

import uvloop

from bench.harness import CpuMeter
from nodeagent.commands import agent_env, plugin_env
from nodeagent.runner import TaskRun
from nodeagent.warm import PluginPool
from tests.support.sink import Sink


async def drain(tasks: int, in_flight: int, work: Path, hosts: int | None = None) -> dict[str, float]:
    """Run `tasks` no-op tasks (after a warm-up of `in_flight`), `in_flight` at a time; CPU ms a task and tasks/s.

    `hosts`: exactly that many plugin hosts (at least 2), whatever the timing (`bench.instructions`, where a run is
    slow); by default the pool sizes itself as in the agent."""
    environ = dict(os.environ)
    env = plugin_env([], agent_env(environ))
    pool = (PluginPool(env, work, size=in_flight, cores=hosts, long_after=math.inf) if hosts
            else PluginPool(env, work, size=in_flight))
    sink = Sink()
    slots = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        async with slots:
            task = {"task_id": f"t{n}", "attempt_id": f"a{n}", "attempt": 1, "task_type": "noop",
                    "input_params": {}, "resources": {"cpu": 0}}
            await TaskRun(task, work, sink, [], kill_grace=1.0, plugins=pool, environ=environ).run()

    try:
        await asyncio.gather(*(one(n) for n in range(in_flight)))
        cpu = CpuMeter([("agent", os.getpid(), "plugin hosts")])
        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(in_flight, in_flight + tasks)))
        elapsed = time.perf_counter() - started
        out = cpu.per_task_ms(tasks)
        hosts = len(pool.hosts)
    finally:
        await pool.close()
    failed = [e for e in sink.events if e["event"] == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} tasks failed, e.g. {failed[0]}")
    return {**out, "tasks/s": tasks / elapsed, "hosts": hosts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write each run's figures here (a list)")
    parser.add_argument("--hosts", type=int, help="exactly this many plugin hosts (at least 2)")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as work:
            figures = uvloop.run(drain(args.tasks, args.in_flight, Path(work), args.hosts))
        runs.append(figures)
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()),
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
