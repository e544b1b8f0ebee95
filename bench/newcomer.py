"""What a newcomer waits for: from a fresh clone, the first `./run.sh --demo` to data on screen (install
included), a later start, `aidd --help` and the commands for scripts.

    python -m bench.newcomer [--repo .] [--runs 5] [--keep]
    python -m bench.newcomer --clone DIR [--commit REV] [--starts 3] [--starts-only]

Clones `--repo` (its committed HEAD) into a temporary folder and runs there, as a newcomer would, with a state
directory of its own in that folder and the API on a free port. The console runs in a pseudo-terminal (120x40);
its output, stripped of escape sequences, is watched for the first frame (the pane tabs) and for the first
frame with data (the Queues pane's task totals, `total N`). Times are wall clock from the command's start.
Then `aidd --serve` runs headless in the clone and each command for scripts is timed `--runs` times against it
(median and fastest wall time, median CPU time), and once against a port where nothing listens (the command's
start alone). The references: a bare `python -c pass` of the same interpreter, and a bare httpx GET of the task
list in a fresh interpreter (the server's share of a command's time).

`--clone DIR` measures only later starts: it reuses the clone a `--keep` run left in DIR (its `.venv` already
installed), checks out `--commit` there (default: `--repo`'s HEAD, fetched into it) and skips the first start;
`--starts N` times each later start N times; `--starts-only` skips the commands for scripts. With the same
pyproject.toml the venv is not installed again, so commits can be compared back to back in one clone.

pip installs from its cache when it has one (this machine's is warm): say so with the figures.
Targets (issue 19): first start ≤ 60 s with the install, a later start ≤ 2 s to data, `aidd --help` ≤ 0.3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import resource
import select
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ESCAPES = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
FIRST_FRAME = re.compile(rb"Queues")
WITH_DATA = re.compile(rb"total \d")
CONSOLE_TIMEOUT_S = 600.0
QUIT_TIMEOUT_S = 60.0


def console_times(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from starting `argv` in a pseudo-terminal to its first frame, and to its first frame with data;
    then quits it (`q`, and `s`: stop everything, if it asks)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen, first, data = b"", None, None
    try:
        while data is None:
            if time.monotonic() - start > CONSOLE_TIMEOUT_S or proc.poll() is not None:
                raise RuntimeError(f"{argv}: no data on screen (exit {proc.poll()}): {_tail(seen)}")
            if select.select([master], [], [], 0.05)[0]:
                try:
                    seen += ESCAPES.sub(b"", os.read(master, 65536))
                except OSError:  # the terminal closed: the command ended
                    continue
            now = time.monotonic() - start
            first = first if first is not None or not FIRST_FRAME.search(seen) else now
            data = now if first is not None and WITH_DATA.search(seen) else None
        _quit(proc, master)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    assert first is not None
    return first, data


def _quit(proc: subprocess.Popen[bytes], master: int) -> None:
    """`q`, then `s` (stop everything) in case it asks; SIGTERM if it has not ended within QUIT_TIMEOUT_S."""
    os.write(master, b"q")
    deadline = time.monotonic() + QUIT_TIMEOUT_S
    asked = False
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):
                os.read(master, 65536)
        if not asked and time.monotonic() > deadline - QUIT_TIMEOUT_S + 2:
            os.write(master, b"s")
            asked = True
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _tail(seen: bytes) -> str:
    return seen[-400:].decode(errors="replace")


def timed(argv: list[str], cwd: Path, env: dict[str, str], runs: int,
          exit_code: int = 0) -> tuple[float, float, float]:
    """Median and fastest wall time of `argv` over `runs` runs (each must exit with `exit_code`), and its median CPU
    time (user + system: what the command itself costs, less sensitive to a loaded machine than wall time)."""
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.monotonic() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != exit_code:
            raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr.decode(errors='replace')}")
    return statistics.median(times), min(times), statistics.median(cpu)


def serve(clone: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`aidd --serve` in the clone on a free port; the process and its URL once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([str(clone / ".venv/bin/aidd"), "--serve", "--port", str(port)], cwd=clone, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while subprocess.run([str(clone / ".venv/bin/aidd"), "tasks", "--url", url], cwd=clone, env=env,
                         capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("aidd --serve did not answer")
        time.sleep(0.5)
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone (its HEAD)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each command for scripts")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--clone", type=Path, metavar="DIR", help="reuse the folder a --keep run left (later starts)")
    parser.add_argument("--commit", default="HEAD", help="with --clone: the commit of --repo to check out there")
    parser.add_argument("--starts", type=int, default=1, help="times each later start is measured")
    parser.add_argument("--starts-only", action="store_true", help="skip the commands for scripts")
    args = parser.parse_args()
    folder = args.clone.resolve() if args.clone else Path(tempfile.mkdtemp(prefix="aidd-newcomer-"))
    clone = folder / "aidd"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDD_", "REDIS_", "DATABASE_", "POSTGRES_"))}
    env.update(TERM="xterm-256color", AIDD_STATE_DIR=str(folder / "state"), AIDD_PORT="0")
    results: dict[str, object] = {"folder": str(folder), "load_before": os.getloadavg()}
    try:
        if args.clone:
            commit = subprocess.run(["git", "-C", str(args.repo), "rev-parse", args.commit], check=True,
                                    capture_output=True, text=True).stdout.strip()
            subprocess.run(["git", "-C", str(clone), "fetch", "-q", str(args.repo.resolve()), commit], check=True)
            subprocess.run(["git", "-C", str(clone), "checkout", "-q", "--detach", commit], check=True)
            results["commit"] = commit
        else:
            subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
            results["first_start_s"] = console_times(["./run.sh", "--demo"], clone, env)
        results["later_start_s"] = [console_times(["./run.sh", "--demo"], clone, env) for _ in range(args.starts)]
        results["later_start_no_demo_s"] = [console_times(["./run.sh"], clone, env) for _ in range(args.starts)]
        if args.starts_only:
            return
        python = str(clone / ".venv/bin/python")
        aidd = str(clone / ".venv/bin/aidd")
        results["python_pass_s"] = timed([python, "-c", "pass"], clone, env, args.runs)
        results["aidd_help_s"] = timed([aidd, "--help"], clone, env, args.runs)
        results["aidd_tasks_nothing_listening_s"] = timed([aidd, "tasks", "--url", "http://127.0.0.1:9"], clone, env,
                                                          args.runs, exit_code=1)  # the start alone, no answer
        server, url = serve(clone, env)
        try:
            fetch = f"import httpx; httpx.get('{url}/api/v1/tasks').raise_for_status()"
            results["bare_httpx_get_tasks_s"] = timed([python, "-c", fetch], clone, env, args.runs)
            submitted = subprocess.run([aidd, "submit", "admet", "qikprop", "--json", "--url", url], cwd=clone,
                                       env=env, check=True, capture_output=True, text=True)
            task_id = json.loads(submitted.stdout)["id"]
            for name, argv in (("tasks", ["tasks"]), ("show", ["show", task_id]), ("logs", ["logs", task_id]),
                               ("submit", ["submit", "admet", "qikprop"])):
                results[f"aidd_{name}_s"] = timed([aidd, *argv, "--url", url], clone, env, args.runs)
            subprocess.run([aidd, "cancel", task_id, "--url", url], cwd=clone, env=env, check=True,
                           capture_output=True)  # a finished task: `wait` answers at once (exit 1: not succeeded)
            results["aidd_wait_s"] = timed([aidd, "wait", task_id, "--url", url], clone, env, args.runs, exit_code=1)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    finally:
        results["load_after"] = os.getloadavg()
        if not args.keep and not args.clone:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
