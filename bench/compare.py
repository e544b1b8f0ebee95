"""aidd next to Celery, RQ, dramatiq and Ray, in one run: submit and drain throughput, idle latency.

    .venv/bin/python -m bench.compare [--tasks 10000] [--latency-tasks 500] [--slots 256] [--repeat 2]
                                      [--systems aidd,celery,rq,dramatiq,ray] [--load] [--flush-ms 0]
                                      [--agents 1] [--coordinators 1] [--peer-processes N,...]
                                      [--json results.json]

Starts the embedded Redis 6.2 (on TCP loopback) and PostgreSQL in a temporary directory. Our coordinator
(`aidd --serve`, its own process) uses Redis database 0; Celery, RQ and dramatiq use databases 1, 2 and 3
of the same server. Ray (in the default systems when it is installed) keeps its tasks in its own processes: a
local cluster started here (a head node without CPUs, so submitted tasks wait; worker nodes as its workers), with
database 4 only counting completions and taking stamps. Its servers listen on every interface, so with Ray the
whole comparison runs in a network namespace of its own with only loopback (`unshare --net`, as root). Every
worker is a real process started here and stopped by its pid.

- Submit: n no-op tasks. aidd: the HTTP batch endpoint, chunks of 1000, 4 requests in flight (every task
  committed to PostgreSQL before the answer); Celery: `group(...).apply_async()` in chunks of 1000; RQ:
  `enqueue_many` on a pipeline, chunks of 1000; dramatiq: `actor.send` (it has no batch call); Ray:
  `f.remote()` per task, held in the driver's memory.
- Drain: the queue holds the n tasks, then the workers start; the clock runs from the first completion seen
  to the last (worker start-up left out). aidd drains 1 000 tasks once before the first measured run, so
  the coordinator's connection pools and statement caches are filled, as in a coordinator that has run a
  while. aidd: one agent process (`nodeagent.cli --slots N`, built-in
  `noop` plugin); Celery: prefork `-c 2`; RQ: 2 workers; dramatiq: 1 and 2 processes (8 threads each);
  Ray: a worker node of 2 CPUs (2 worker processes).
- Scale-out (for a bigger host): `--agents 1,2,4` drains with each number of agent processes (each with
  `--slots`; submitted to a paused service, resumed once every agent has registered, so they start together),
  `--coordinators M` runs M coordinator processes on the same stores with the agents spread over them in turn,
  `--peer-processes 1,2,4` the peers' workers in those numbers instead of their defaults. A peer's ratio is to
  aidd's drain with as many agents as it has processes, where that was measured (else one agent).
- Latency: one task at a time on idle workers, after 20 warm-up tasks: submit -> the task function entered,
  submit -> finished. Peers: both stamped inside the task function (the end is the function's return, before
  the peer acknowledges it). aidd: start from inside the plugin, finished = `finished_at` of the task row,
  stamped in the transaction that records the success.
- Reference: raw redis-py LPUSH/RPOP on the same server, one round trip per op and pipelined.
- Redis held: the slow log's longest command during each submit and each drain (every command over 0.1 ms is
  logged; a script is one command, and every other client waits while it runs).
- `--load`: after the quiet rounds, the same rounds again with a CPU hog (a busy loop pinned to one core,
  `harness.cpu_hog`) running through each system's turn, started before it and stopped after by its pid: the
  same hog for every system, in the same run. Both tables are printed, quiet first.
- `--flush-ms`: a slower disk for PostgreSQL: every WAL flush waits this much longer (`commit_delay`, with
  `commit_siblings` 0), as on network block storage, where a flush takes a millisecond or more; this machine's
  own disk flushes in about 0.25 ms. Only aidd writes to PostgreSQL.

Ratios: throughput ours / theirs; latency theirs / ours. Above 1 means aidd is ahead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NoReturn

import asyncpg

from bench import peer_runs
from bench.harness import SlowLog, cpu_hog
from bench.ours import KEEPS as OURS_KEEPS
from bench.ours import Ours, script_names
from bench.queue_throughput import raw_redis_rates
from coordinator.embedded import start_embedded

PEER_DBS = {"celery": 1, "rq": 2, "dramatiq": 3, "ray": 4}
DRAIN_PROCESSES = {"celery": [2], "rq": [2], "dramatiq": [1, 2], "ray": [2]}
LATENCY_PROCESSES = {"celery": 2, "rq": 2, "dramatiq": 1, "ray": 2}
SUBMIT_HOW = {"aidd": "HTTP batch, durable", "celery": "group().apply_async", "rq": "enqueue_many, pipelined",
              "dramatiq": "send", "ray": "f.remote(), in memory"}
DRAIN_HOW = {"aidd": "1 agent process", "celery": "prefork -c {p}", "rq": "{p} workers (fork per job)",
             "dramatiq": "{p} process(es) x 8 threads", "ray": "a node of {p} CPUs"}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def count_arg(value: str) -> int:
    """A number of processes as argparse reads it: 1 to 64."""
    if not value.strip().isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"{value}: a number of processes, 1 to 64")
    return int(value)


def counts_arg(value: str) -> list[int]:
    """Comma-separated numbers of processes, as argparse reads them."""
    return [count_arg(v) for v in value.split(",")]


def flush_delay_arg(value: str) -> float:
    """`--flush-ms` as argparse reads it: 0 to 100 ms (PostgreSQL's bounds for `commit_delay`)."""
    ms = float(value)
    if not 0 <= ms <= 100:
        raise argparse.ArgumentTypeError(f"{value}: must be 0 to 100 (ms)")
    return ms


async def slow_flushes(database_url: str, ms: float) -> None:
    """Make every WAL flush of this PostgreSQL server wait `ms` milliseconds first (see `--flush-ms`)."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(f"ALTER SYSTEM SET commit_delay = {round(ms * 1000)}")
        await conn.execute("ALTER SYSTEM SET commit_siblings = 0")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def measure(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """Every figure of one run (see the module docstring): the quiet rounds, then (with --load) the loaded ones."""
    log_dir = state / "logs"
    log_dir.mkdir()
    # A state dir path too long for a unix socket makes the embedded Redis listen on TCP loopback.
    servers = start_embedded(state / ("embedded-on-tcp-loopback-" + "x" * 80))
    if args.flush_ms:
        asyncio.run(slow_flushes(servers.database_url, args.flush_ms))
    base = servers.redis_url.rsplit("/", 1)[0]
    out: dict[str, Any] = {"tasks": args.tasks, "latency_tasks": args.latency_tasks, "slots": args.slots,
                           "agents": args.agents, "coordinators": args.coordinators, "repeat": args.repeat,
                           "redis": base, "modes": {}}
    timeout = max(300.0, args.tasks / 10)  # RQ drains ~150/s on a quiet 2-core machine, ~12/s on a busy one
    ours: Ours | None = None
    peers: dict[str, peer_runs.Peer] = {}
    try:
        out["raw_redis"] = raw_redis_rates(f"{base}/0", args.tasks)
        slow = SlowLog(f"{base}/0", script_names())
        if "aidd" in args.systems:
            rounds = 2 if args.load else 1
            ours = Ours(f"{base}/0", servers.database_url, state, log_dir,
                        max_pending=args.tasks * (rounds * args.repeat * len(args.agents) + 1),
                        stores={"postgres": servers.postgres_pid, "redis": servers.redis_pid},
                        coordinators=args.coordinators)
            ours.start()
            ours.drain(min(args.tasks, 1000), args.slots, timeout)  # warm-up, not counted: pools and caches fill
        for name in args.systems:
            if name != "aidd":
                peers[name] = peer_runs.PEERS[name](f"{base}/{PEER_DBS[name]}")
                peers[name].start(log_dir)
        for mode in ("quiet", "loaded") if args.load else ("quiet",):
            out["modes"][mode] = rounds_of(args, ours, peers, slow, log_dir, timeout, loaded=mode == "loaded")
    finally:
        for peer in peers.values():
            peer.stop()
        if ours is not None:
            ours.stop()
        servers.stop()
    return out


def rounds_of(args: argparse.Namespace, ours: Ours | None, peers: dict[str, peer_runs.Peer], slow: SlowLog,
              log_dir: Path, timeout: float, loaded: bool) -> dict[str, Any]:
    """The systems' figures, summarised; `loaded`: a CPU hog pinned to one core runs through each system's turn
    (started before it, stopped after, by pid).

    The systems take turns, round after round (aidd, celery, rq, dramatiq, aidd, ...), so a burst of load
    from elsewhere on the machine does not fall on one system's runs only.
    """
    systems: dict[str, Any] = {}
    if ours is not None:
        systems["aidd"] = {"keeps": OURS_KEEPS, "drain": {str(a): [] for a in args.agents}, "latency": []}
    for name in peers:
        systems[name] = {"keeps": peer_runs.KEEPS[name], "latency": [],
                         "drain": {str(p): [] for p in args.peer_processes or DRAIN_PROCESSES[name]}}
    for _ in range(args.repeat):
        for name, system in systems.items():
            hog = cpu_hog(log_dir) if loaded else None
            try:
                if name == "aidd":
                    assert ours is not None
                    for agents in args.agents:
                        system["drain"][str(agents)].append(ours.drain(args.tasks, args.slots, timeout, slow, agents))
                    system["latency"].append(ours.latency(args.latency_tasks, args.slots))
                    continue
                for processes in args.peer_processes or DRAIN_PROCESSES[name]:
                    system["drain"][str(processes)].append(
                        peer_runs.drain(peers[name], args.tasks, processes, log_dir, timeout, slow))
                system["latency"].append(peer_runs.latency(peers[name], args.latency_tasks,
                                                           LATENCY_PROCESSES[name], log_dir))
            except SystemExit as exc:
                raise SystemExit(f"{name}{' (loaded)' if loaded else ''}: {exc}") from exc
            finally:
                if hog is not None:
                    hog.stop()
    summarise(systems)
    return systems


def summarise(systems: dict[str, Any]) -> None:
    """Add medians and spreads of the repeated runs to each system."""
    for system in systems.values():
        runs = [r for runs in system["drain"].values() for r in runs]
        system["submit"] = spread([r["submit_tasks_per_s"] for r in runs])
        system["slowest_redis_ms"] = {phase: spread([r["slowest_redis_command"][phase]["max_ms"] for r in runs])
                                      for phase in ("submit", "drain")}
        system["slowest_redis_command"] = {phase: max((r["slowest_redis_command"][phase] for r in runs),
                                                      key=lambda c: c["max_ms"])["command"]
                                           for phase in ("submit", "drain")}
        system["drain_rate"] = {p: spread([r["drain_tasks_per_s"] for r in runs])
                                for p, runs in system["drain"].items()}
        cpu = {p: [r["cpu_ms_per_task"] for r in runs if "cpu_ms_per_task" in r] for p, runs in system["drain"].items()}
        if any(cpu.values()):
            system["drain_cpu_ms_per_task"] = {
                p: {part: statistics.median(run[part] for run in runs) for part in runs[0]} for p, runs in cpu.items()}
        system["latency_summary"] = {
            kind: {q: spread([run[kind][q] for run in system["latency"]]) for q in ("p50_ms", "p99_ms")}
            for kind in ("start", "finish")}


def _fmt(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:>9,.{digits}f}  ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def render(out: dict[str, Any], mode: str) -> str:
    """The comparison table of one mode (quiet, loaded) as text."""
    systems = out["modes"][mode]
    ours = systems.get("aidd")
    load = ("quiet: nothing of ours beside the systems" if mode == "quiet" else
            "loaded: a CPU hog pinned to one core through each system's turn")
    lines = [f"== {load} ==",
             f"{out['tasks']} no-op tasks; latency over {out['latency_tasks']} single tasks; "
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
            if name == "aidd":
                how = (f"{procs} agent{'s' if procs != '1' else ''} x {out['slots']} slots"
                       + (f", {out['coordinators']} coord." if out["coordinators"] > 1 else ""))
                first = next(iter(system["drain_rate"].values()))["median"]
                lines.append(f"  {name + ' (' + how + ')':<42} {_fmt(rate):<30} {rate['median'] / first:6.2f} "
                             "of its first row")
                parts = system["drain_cpu_ms_per_task"][procs]
                lines.append("    CPU ms per task (median): " + ", ".join(
                    f"{part} {ms:.3f}" for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]) if part != "total")
                    + f"; total {parts['total']:.3f}")
                continue
            how = DRAIN_HOW[name].format(p=procs)
            ratio = float("nan")
            if ours:  # to aidd with as many agents as this peer has processes, where measured
                same = ours["drain_rate"].get(procs, next(iter(ours["drain_rate"].values())))
                ratio = same["median"] / rate["median"]
            lines.append(f"  {name + ' (' + how + ')':<42} {_fmt(rate):<30} {ratio:6.2f}")
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
    lines += ["", "Redis held: the slow log's longest command, ms   submit median (min-max), which   "
                  "drain median (min-max), which"]
    for name, system in systems.items():
        ms, command = system["slowest_redis_ms"], system["slowest_redis_command"]
        lines.append(f"  {name:<34} {_fmt(ms['submit'], 2):<24} {command['submit']:<12}"
                     f"{_fmt(ms['drain'], 2):<24} {command['drain']}")
    raw = out["raw_redis"]
    lines += ["", "Reference: raw redis-py LPUSH/RPOP on the same server",
              f"  one round trip per op   {raw['ops_per_s_single']:>10,.0f} ops/s",
              f"  pipelined (1000)        {raw['ops_per_s_pipelined']:>10,.0f} ops/s", "", "What each keeps:"]
    lines += [f"  {name}: {system['keeps']}" for name, system in systems.items()]
    return "\n".join(lines)


OWN_NETWORK = "AIDD_BENCH_OWN_NETWORK"
"""Set in the comparison that runs again in a network namespace of its own."""


def in_own_network() -> NoReturn:
    """Run this comparison again in a new network namespace that has only loopback: Ray's servers listen on
    every interface (no option binds them all to loopback), which this bench must not do. Needs root."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        raise SystemExit("ray runs in a network namespace of its own: run as root with unshare and ip (util-linux, "
                         "iproute2), or leave ray out of --systems")
    argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            sys.executable, "-m", "bench.compare", *sys.argv[1:]]
    os.execvpe("unshare", argv, {**os.environ, OWN_NETWORK: "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--slots", type=int, default=256,
                        help="slots of our agent (tasks beyond its warm hosts wait in the agent, like a prefetch)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement (the spread is shown)")
    parser.add_argument("--systems", default="aidd,celery,rq,dramatiq" + (",ray" if find_spec("ray") else ""),
                        type=lambda v: [s.strip() for s in v.split(",") if s.strip()])
    parser.add_argument("--load", action="store_true",
                        help="after the quiet rounds, the same rounds with a CPU hog pinned to one core (both tables)")
    parser.add_argument("--flush-ms", type=flush_delay_arg, default=0.0,
                        help="PostgreSQL's WAL flushes take this much longer, as on a slower disk (default: 0)")
    parser.add_argument("--agents", type=counts_arg, default=[1],
                        help="aidd drains with each of these numbers of agent processes (default: 1)")
    parser.add_argument("--coordinators", type=count_arg, default=1,
                        help="aidd runs this many coordinator processes on the same stores (default: 1)")
    parser.add_argument("--peer-processes", type=counts_arg, default=None,
                        help="the peers drain with each of these numbers of worker processes (default: their own)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    unknown = set(args.systems) - {"aidd", *peer_runs.PEERS}
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if "ray" in args.systems and os.environ.get(OWN_NETWORK) != "1":
        in_own_network()
    with tempfile.TemporaryDirectory(prefix="aidd-compare-") as tmp:
        out = measure(args, Path(tmp))
    print("\n\n".join(render(out, mode) for mode in out["modes"]))
    if args.json:
        out["argv"] = sys.argv
        out["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
