"""Where Redis's time goes in a drain, command by command and script by script, as microseconds a task.

    .venv/bin/python -m bench.redis_time [--tasks 20000] [--slots 256]

Starts the embedded stores and `aidd --serve` (bench.ours, as `bench.compare`), drains 1 000 no-op tasks to warm
up, then logs every command Redis runs (its slow log at 0 µs) through a submit and drain of `--tasks` with one
agent, and prints calls, µs a task and µs a call for each command and each of our scripts. A script's time holds
the commands it calls, which are listed on their own too; what Redis spends reading requests and writing answers
is in neither. No reference: run it on two trees alternately (the figures move by a few per cent between runs).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import redis

from bench.harness import command_name
from bench.ours import Ours, script_names
from coordinator.embedded import start_embedded


def redis_time(tasks: int, slots: int, state: Path) -> dict[str, tuple[int, float]]:
    """(calls, µs in all) of every command and script during one submit and drain of `tasks`."""
    (state / "logs").mkdir()
    servers = start_embedded(state / ("embedded-on-tcp-loopback-" + "x" * 80))
    ours = Ours(servers.redis_url, servers.database_url, state, state / "logs", max_pending=2 * tasks + 1000, stores={})
    try:
        ours.start()
        ours.drain(1000, slots, 300)
        client = redis.Redis.from_url(servers.redis_url)
        client.config_set("slowlog-max-len", 20 * tasks + 100_000)
        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        ours.drain(tasks, slots, max(300.0, tasks / 10))
        entries = client.slowlog_get(20 * tasks + 100_000)
    finally:
        ours.stop()
        servers.stop()
    names = script_names()
    spent: dict[str, tuple[int, float]] = {}
    for entry in entries:
        name = command_name(entry, names)
        calls, us = spent.get(name, (0, 0.0))
        spent[name] = (calls + 1, us + entry["duration"])
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aidd-redis-time-") as tmp:
        spent = redis_time(args.tasks, args.slots, Path(tmp))
    print(f"{args.tasks} no-op tasks submitted and drained by one agent of {args.slots} slots")
    print(f"{'':<22}{'calls':>9}{'us a task':>12}{'us a call':>12}")
    for name, (calls, us) in sorted(spent.items(), key=lambda kv: -kv[1][1]):
        if us / args.tasks >= 0.01:
            print(f"{name:<22}{calls:>9}{us / args.tasks:>12.2f}{us / calls:>12.1f}")


if __name__ == "__main__":
    main()
