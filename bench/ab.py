"""Is a change faster on a noisy machine? This tree against another revision, one benchmark, run alternately.

`python -m bench.ab --base REV [--rounds 4] [--bench compare|warm_pool] [--tasks N]`: the working tree against
REV (checked out in a temporary `git worktree`, removed afterwards). Each round runs the benchmark once in each
tree, the base first in odd rounds and this tree first in even ones, so a machine that speeds up or slows down
through the run favours neither. Both run this tree's `bench/` (only the product differs). Printed per figure:
each round's values, the medians, the change, and in how many rounds this tree was ahead.

Why: the shared 2-core VMs drift by ±25 % between minutes (bench/RESULTS.md, issue 17); one run of each says
nothing, rounds that agree do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import REPO


@dataclass(frozen=True)
class Figure:
    """One number a benchmark's JSON gives, and which way is better."""

    name: str
    read: Callable[[Any], float]
    higher_is_better: bool


def _ours(out: Any) -> Any:
    return out["modes"]["quiet"]["aidd"]


def _cpu(part: str) -> Figure:
    """A part's CPU in the first drain row (one agent, unless the run asked for others)."""
    return Figure(f"CPU ms a task, {part}",
                  lambda out: next(iter(_ours(out)["drain_cpu_ms_per_task"].values()))[part], False)


def _warm(key: str, higher_is_better: bool = False) -> Figure:
    return Figure(key if higher_is_better else f"CPU ms a task, {key}", lambda out: out[0][key], higher_is_better)


BENCHES: dict[str, tuple[list[str], list[Figure]]] = {
    "compare": (["--systems", "aidd", "--latency-tasks", "20", "--repeat", "1"], [
        Figure("drain tasks/s", lambda out: next(iter(_ours(out)["drain_rate"].values()))["median"], True),
        *(_cpu(part) for part in ("total", "agent", "plugin hosts", "coordinator", "postgres", "redis")),
        Figure("submit -> start p50 ms", lambda out: _ours(out)["latency_summary"]["start"]["p50_ms"]["median"],
               False),
        Figure("submit tasks/s", lambda out: _ours(out)["submit"]["median"], True)]),
    "warm_pool": (["--repeat", "1"], [_warm("tasks/s", True), _warm("total"), _warm("agent"), _warm("plugin hosts")]),
}
"""Each benchmark's fixed arguments (one run, our system only) and the figures compared."""


def run_once(tree: Path, bench: str, args: list[str]) -> Any:
    """One run of `bench.<bench>` in `tree`; its JSON."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out.json"
        done = subprocess.run([sys.executable, "-m", f"bench.{bench}", *args, "--json", str(out)], cwd=tree,
                              env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench.{bench} failed in {tree}: {done.stderr.strip().splitlines()[-1:]}")
        return json.loads(out.read_text())


def base_tree(rev: str, where: Path) -> Path:
    """`rev` checked out at `where`, with this tree's bench/ in place of its own."""
    added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev],
                           capture_output=True, text=True)
    if added.returncode != 0:
        raise SystemExit(f"cannot check out {rev!r}: {added.stderr.strip()}")
    shutil.rmtree(where / "bench")
    shutil.copytree(REPO / "bench", where / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    return where


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def report(figures: list[Figure], base: list[Any], ours: list[Any], rev: str) -> None:
    """Per figure: the medians, the change, the rounds this tree was ahead in, and each round's pair."""
    print(f"{'figure':28s} {'base ' + rev:>12s} {'this tree':>12s} {'change':>8s}  ahead  rounds (base / this)")
    for figure in figures:
        old, new = [figure.read(out) for out in base], [figure.read(out) for out in ours]
        before, after = statistics.median(old), statistics.median(new)
        ahead = sum((n > o) == figure.higher_is_better and n != o for o, n in zip(old, new, strict=True))
        change = f"{100 * (after - before) / before:+.0f} %" if before else "-"
        rounds = "  ".join(f"{number(o)}/{number(n)}" for o, n in zip(old, new, strict=True))
        print(f"{figure.name:28s} {number(before):>12s} {number(after):>12s} {change:>8s}  {ahead}/{len(old)}    "
              f"{rounds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision to compare with, e.g. main or HEAD~1")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--bench", choices=sorted(BENCHES), default="compare")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks a run (the drain's, or warm_pool's)")
    args = parser.parse_args()
    fixed, figures = BENCHES[args.bench]
    bench_args = [*fixed, "--tasks", str(args.tasks)]
    base: list[Any] = []
    ours: list[Any] = []
    with tempfile.TemporaryDirectory() as scratch:
        old = base_tree(args.base, Path(scratch) / "base")
        try:
            for round_no in range(1, args.rounds + 1):
                order = [(old, base), (REPO, ours)] if round_no % 2 else [(REPO, ours), (old, base)]
                for tree, results in order:
                    results.append(run_once(tree, args.bench, bench_args))
                print(f"round {round_no} of {args.rounds} done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    report(figures, base, ours, args.base)


if __name__ == "__main__":
    main()
