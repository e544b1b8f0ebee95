"""aidd next to Celery, RQ and dramatiq on one Redis, in one run: submit and drain throughput, idle latency.

    .venv/bin/python -m bench.compare [--tasks 10000] [--latency-tasks 500] [--slots 256] [--repeat 2]
                                      [--systems aidd,celery,rq,dramatiq] [--json results.json]

Starts the embedded Redis 6.2 (on TCP loopback) and PostgreSQL in a temporary directory. Our coordinator
(`aidd --serve`, its own process) uses Redis database 0; Celery, RQ and dramatiq use databases 1, 2 and 3
of the same server. Every worker is a real process started here and stopped by its pid.

- Submit: n no-op tasks. aidd: the HTTP batch endpoint, chunks of 1000, 4 requests in flight (every task
  committed to PostgreSQL before the answer); Celery: `group(...).apply_async()` in chunks of 1000; RQ:
  `enqueue_many` on a pipeline, chunks of 1000; dramatiq: `actor.send` (it has no batch call).
- Drain: the queue holds the n tasks, then the workers start; the clock runs from the first completion seen
  to the last (worker start-up left out). aidd drains 1 000 tasks once before the first measured run, so
  the coordinator's connection pools and statement caches are filled, as in a coordinator that has run a
  while. aidd: one agent process (`nodeagent.cli --slots N`, built-in
  `noop` plugin); Celery: prefork `-c 2`; RQ: 2 workers; dramatiq: 1 and 2 processes (8 threads each).
- Latency: one task at a time on idle workers, after 20 warm-up tasks: submit -> the task function entered,
  submit -> finished. Peers: both stamped inside the task function (the end is the function's return, before
  the peer acknowledges it). aidd: start from inside the plugin, finished = `finished_at` of the task row,
  stamped in the transaction that records the success.
- Reference: raw redis-py LPUSH/RPOP on the same server, one round trip per op and pipelined.

Ratios: throughput ours / theirs; latency theirs / ours. Above 1 means aidd is ahead.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import peer_runs
from bench.ours import KEEPS as OURS_KEEPS
from bench.ours import Ours
from bench.queue_throughput import raw_redis_rates
from coordinator.embedded import start_embedded

PEER_DBS = {"celery": 1, "rq": 2, "dramatiq": 3}
DRAIN_PROCESSES = {"celery": [2], "rq": [2], "dramatiq": [1, 2]}
LATENCY_PROCESSES = {"celery": 2, "rq": 2, "dramatiq": 1}
SUBMIT_HOW = {"aidd": "HTTP batch, durable", "celery": "group().apply_async", "rq": "enqueue_many, pipelined",
              "dramatiq": "send"}
DRAIN_HOW = {"aidd": "1 agent process", "celery": "prefork -c {p}", "rq": "{p} workers (fork per job)",
             "dramatiq": "{p} process(es) x 8 threads"}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """Every figure of one run (see the module docstring).

    The systems take turns, round after round (aidd, celery, rq, dramatiq, aidd, ...), so a burst of load
    from elsewhere on the machine does not fall on one system's runs only.
    """
    log_dir = state / "logs"
    log_dir.mkdir()
    # A state dir path too long for a unix socket makes the embedded Redis listen on TCP loopback.
    servers = start_embedded(state / ("embedded-on-tcp-loopback-" + "x" * 80))
    base = servers.redis_url.rsplit("/", 1)[0]
    out: dict[str, Any] = {"tasks": args.tasks, "latency_tasks": args.latency_tasks, "slots": args.slots,
                           "repeat": args.repeat, "redis": base, "systems": {}}
    timeout = max(120.0, args.tasks / 20)
    ours: Ours | None = None
    try:
        out["raw_redis"] = raw_redis_rates(f"{base}/0", args.tasks)
        if "aidd" in args.systems:
            ours = Ours(f"{base}/0", servers.database_url, state, log_dir, max_pending=args.tasks * (args.repeat + 1),
                        stores={"postgres": servers.postgres_pid, "redis": servers.redis_pid})
            ours.start()
            ours.drain(min(args.tasks, 1000), args.slots, timeout)  # warm-up, not counted: pools and caches fill
            out["systems"]["aidd"] = {"keeps": OURS_KEEPS, "drain": {"1": []}, "latency": []}
        peers = {name: peer_runs.PEERS[name](f"{base}/{PEER_DBS[name]}") for name in args.systems if name != "aidd"}
        for name in peers:
            out["systems"][name] = {"keeps": peer_runs.KEEPS[name], "latency": [],
                                    "drain": {str(p): [] for p in DRAIN_PROCESSES[name]}}
        for _ in range(args.repeat):
            for name, system in out["systems"].items():
                if name == "aidd":
                    assert ours is not None
                    system["drain"]["1"].append(ours.drain(args.tasks, args.slots, timeout))
                    system["latency"].append(ours.latency(args.latency_tasks, args.slots))
                    continue
                for processes in DRAIN_PROCESSES[name]:
                    system["drain"][str(processes)].append(
                        peer_runs.drain(peers[name], args.tasks, processes, log_dir, timeout))
                system["latency"].append(peer_runs.latency(peers[name], args.latency_tasks,
                                                           LATENCY_PROCESSES[name], log_dir))
    finally:
        if ours is not None:
            ours.stop()
        servers.stop()
    summarise(out)
    return out


def summarise(out: dict[str, Any]) -> None:
    """Add medians and spreads of the repeated runs to each system."""
    for system in out["systems"].values():
        submits = [r["submit_tasks_per_s"] for runs in system["drain"].values() for r in runs]
        system["submit"] = spread(submits)
        system["drain_rate"] = {p: spread([r["drain_tasks_per_s"] for r in runs])
                                for p, runs in system["drain"].items()}
        cpu_runs = [r["cpu_ms_per_task"] for runs in system["drain"].values() for r in runs if "cpu_ms_per_task" in r]
        if cpu_runs:
            system["drain_cpu_ms_per_task"] = {part: statistics.median(run[part] for run in cpu_runs)
                                               for part in cpu_runs[0]}
        system["latency_summary"] = {
            kind: {q: spread([run[kind][q] for run in system["latency"]]) for q in ("p50_ms", "p99_ms")}
            for kind in ("start", "finish")}


def _fmt(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:>9,.{digits}f}  ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def render(out: dict[str, Any]) -> str:
    """The comparison table as text."""
    systems = out["systems"]
    ours = systems.get("aidd")
    lines = [f"{out['tasks']} no-op tasks; latency over {out['latency_tasks']} single tasks; "
             f"{out['repeat']} run(s) each: median (min-max); ratio > 1: aidd ahead",
             f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}, "
             f"Redis {out['redis']}", ""]
    lines.append("Submit, tasks/s                                 median   (min-max)            aidd / it")
    for name, system in systems.items():
        ratio = ours["submit"]["median"] / system["submit"]["median"] if ours else float("nan")
        lines.append(f"  {name + ' (' + SUBMIT_HOW[name] + ')':<42} {_fmt(system['submit']):<30} {ratio:6.2f}")
    lines += ["", "Drain, tasks/s"]
    for name, system in systems.items():
        for procs, rate in system["drain_rate"].items():
            how = DRAIN_HOW[name].format(p=procs) if name != "aidd" else f"1 agent process, {out['slots']} slots"
            ratio = ours["drain_rate"]["1"]["median"] / rate["median"] if ours else float("nan")
            lines.append(f"  {name + ' (' + how + ')':<42} {_fmt(rate):<30} {ratio:6.2f}")
        if "drain_cpu_ms_per_task" in system:
            parts = system["drain_cpu_ms_per_task"]
            lines.append("    CPU ms per task (median): " + ", ".join(
                f"{part} {ms:.3f}" for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]) if part != "total")
                + f"; total {parts['total']:.3f}")
    for kind, title in (("start", "submit -> start"), ("finish", "submit -> finished")):
        lines += ["", f"Latency {title}, ms            p50 median (min-max)   p99 median (min-max)   "
                      "it / aidd p50, p99"]
        for name, system in systems.items():
            s = system["latency_summary"][kind]
            ratios = ""
            if ours:
                o = ours["latency_summary"][kind]
                ratios = (f"{s['p50_ms']['median'] / o['p50_ms']['median']:5.2f}, "
                          f"{s['p99_ms']['median'] / o['p99_ms']['median']:5.2f}")
            lines.append(f"  {name:<24} {_fmt(s['p50_ms'], 1):<26} {_fmt(s['p99_ms'], 1):<26} {ratios}")
    raw = out["raw_redis"]
    lines += ["", "Reference: raw redis-py LPUSH/RPOP on the same server",
              f"  one round trip per op   {raw['ops_per_s_single']:>10,.0f} ops/s",
              f"  pipelined (1000)        {raw['ops_per_s_pipelined']:>10,.0f} ops/s", "", "What each keeps:"]
    lines += [f"  {name}: {system['keeps']}" for name, system in systems.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--slots", type=int, default=256,
                        help="slots of our agent (tasks beyond its warm hosts wait in the agent, like a prefetch)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement (the spread is shown)")
    parser.add_argument("--systems", default="aidd,celery,rq,dramatiq",
                        type=lambda v: [s.strip() for s in v.split(",") if s.strip()])
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    unknown = set(args.systems) - {"aidd", *peer_runs.PEERS}
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="aidd-compare-") as tmp:
        out = measure(args, Path(tmp))
    print(render(out))
    if args.json:
        out["argv"] = sys.argv
        out["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
