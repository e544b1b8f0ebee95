"""What every benchmark shares: child processes stopped by pid, waiting for them and for the coordinator's health,
rates and percentiles (a free loopback port comes from `tests.support.ports`, as the tests' does)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from nodeagent.runner import parent_death_signal

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    """A process this benchmark started (its own process group), stopped by its pid and nothing else."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM its process group, SIGKILL it after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        _signal_group(self.proc.pid, signal.SIGKILL)  # helpers it left behind in its group
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        """The end of its log (for error messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit in the benchmark's main thread (once, where nothing else handles it)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(f"stopped by {signal.Signals(signum).name}"))


def spawn(name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> Child:
    """Start `argv` in its own session (so stopping it stops its helpers too), output to `log_dir/name.log`.

    A benchmark stopped by `timeout` or a signal ran no `finally`, and its coordinators and agents, in sessions of
    their own, ran on for hours after it: now SIGTERM makes the benchmark exit through its `finally` blocks, which
    stop each child's whole group, and a child is killed when the benchmark dies even of SIGKILL (Linux; its own
    children are not, as a dramatiq worker outlived its master)."""
    _exit_on_sigterm()
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=parent_death_signal())
    return Child(name, proc, log)


def python_env(**extra: str) -> dict[str, str]:
    """The environment for child Python processes: this repository importable, plus `extra`."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def python(*args: str) -> list[str]:
    """argv running this interpreter."""
    return [sys.executable, *args]


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05,
             children: Sequence[Child] = ()) -> None:
    """Poll `check` until it holds; SystemExit naming `what` (and a dead child's log) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for child in children:
            if not child.alive():
                raise SystemExit(f"{child.name} exited ({child.proc.returncode}) while waiting for {what}:\n"
                                 f"{child.tail()}")
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def healthy(url: str) -> bool:
    """Whether the coordinator at `url` answers its health check (False while it cannot be reached)."""
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(url: str, timeout: float = 120, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until the coordinator at `url` is healthy; SystemExit after `timeout`, or as soon as `proc` (the
    coordinator's process, when the caller started it without `spawn`) has exited."""
    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the coordinator exited with {proc.returncode}")
        return healthy(url)
    wait_for(up, timeout, f"the coordinator at {url}", interval=0.2)


@dataclass
class DrainClock:
    """Measures a drain from outside: polls a done-counter; the clock starts at the first completion seen.

    Starting at the first completion leaves out the workers' own start-up (imports, connections),
    which differs a lot between systems and says nothing about throughput.
    """

    count: Callable[[], int]
    total: int
    interval: float = 0.005
    samples: list[tuple[float, int]] = field(default_factory=list)
    at_first: Callable[[], None] | None = None
    """Called once, at the first completion seen (where a CPU meter starts to count over the same span)."""
    first_done: int = 0
    """How many were done at the first completion seen: the rate and the CPU count the rest."""

    def run(self, timeout: float, children: Sequence[Child] = ()) -> float:
        """Wait until `total` are done; returns tasks/s from the first completion seen to the last."""
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        next_check = time.monotonic() + 1.0
        while True:
            now, done = time.perf_counter(), self.count()
            if first is None and done > 0:
                first, self.first_done = (now, done), done
                if self.at_first is not None:
                    self.at_first()
            if done >= self.total:
                assert first is not None
                self.samples.append((now, done))
                if done == first[1]:
                    raise SystemExit("drain: every task finished before the first poll; use more tasks")
                return (done - first[1]) / (now - first[0])
            if time.monotonic() > deadline:
                raise SystemExit(f"drain timed out: {done} of {self.total} finished after {timeout:.0f}s")
            if time.monotonic() > next_check:
                next_check = time.monotonic() + 1.0
                for child in children:
                    if not child.alive():
                        raise SystemExit(f"{child.name} exited ({child.proc.returncode}) during the drain:\n"
                                         f"{child.tail()}")
            time.sleep(self.interval)


class CpuMeter:
    """CPU seconds (user + system) of named processes and, optionally, their descendants, over a span.

    `parts`: (name, pid, name for its descendants, or None to count them with it); processes of the same name
    (several agents, several coordinators) are counted together. A process that ends during the span loses what
    it used (the drains' processes live through them).
    """

    def __init__(self, parts: Sequence[tuple[str, int, str | None]]) -> None:
        self.parts = parts
        self._start = self._read()

    def _read(self) -> dict[int, tuple[str, float]]:
        seen: dict[int, tuple[str, float]] = {}
        for name, pid, children_name in self.parts:
            try:
                root = psutil.Process(pid)
                procs = [(root, name), *((c, children_name or name) for c in root.children(recursive=True))]
            except psutil.Error:
                continue
            for proc, label in procs:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                seen[proc.pid] = (label, times.user + times.system)
        return seen

    def per_task_ms(self, tasks: int) -> dict[str, float]:
        """Milliseconds of CPU per task of each part since the meter was made, and their `total`."""
        used: dict[str, float] = {}
        for pid, (label, seconds) in self._read().items():
            used[label] = used.get(label, 0.0) + seconds - self._start.get(pid, (label, 0.0))[1]
        out = {label: 1000 * seconds / tasks for label, seconds in used.items()}
        out["total"] = sum(out.values())
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]) if 1 <= q <= 99 else (
        float(min(values)) if q <= 0 else float(max(values)))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else float("nan"),
            "n": len(ms)}


class SlowLog:
    """The longest command a Redis server ran in a span, from its slow log (which times each command inside the
    server, a script as one command: how long every other client waited behind it).

    Commands under `threshold_us` are not logged, so a span with none logged reads as 0. `scripts` names the
    scripts by their SHA-1, so a longest EVALSHA is shown by name. The log is the server's: a span also holds
    what other clients ran meanwhile (in bench.compare, the idle coordinator's timers during a peer's turn).
    """

    def __init__(self, url: str, scripts: dict[str, str], threshold_us: int = 100) -> None:
        self.client, self.scripts = redis.Redis.from_url(url), scripts
        self.client.config_set("slowlog-log-slower-than", threshold_us)
        self.client.config_set("slowlog-max-len", 10_000)
        self.client.slowlog_reset()

    def take(self) -> dict[str, float | str]:
        """The longest command since the last take (ms, and its name) and how many were logged; starts a new span."""
        entries = [e for e in self.client.slowlog_get(10_000) if not e["command"].upper().startswith(b"SLOWLOG")]
        self.client.slowlog_reset()  # (logged itself when slow: the filter above leaves out this and the last take)
        if not entries:
            return {"max_ms": 0.0, "command": "", "logged": 0}
        longest = max(entries, key=lambda e: e["duration"])
        return {"max_ms": longest["duration"] / 1000, "command": command_name(longest, self.scripts),
                "logged": len(entries)}


def command_name(entry: dict[str, Any], scripts: dict[str, str]) -> str:
    """A slow log entry's command, or for an EVALSHA the script's name (`scripts`: names by SHA-1)."""
    words = entry["command"].decode(errors="replace").split(" ", 2)
    return scripts.get(words[1], words[0]) if words[0].upper() == "EVALSHA" and len(words) > 1 else words[0]


HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def cpu_hog(log_dir: Path) -> Child:
    """A process that keeps one core busy (the last this process may use, pinned there): another tenant's load."""
    core = max(os.sched_getaffinity(0))
    return spawn("cpu-hog", python("-c", HOG, str(core)), python_env(), log_dir)
