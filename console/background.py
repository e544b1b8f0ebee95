"""What `aidd` leaves running past the console, per state directory: the local agent and a background coordinator.

Quitting the console must not cost running work (SPEC, "Guarantees"): the local agent runs in a session of its own
from the start, and "keep running in the background" leaves the embedded coordinator's own process
(console/child.py) running. Each is recorded in a pid file of the state directory (`agent.pid`,
`coordinator.pid`) so that a later `aidd` reuses the agent or attaches to the coordinator, and `aidd stop` ends
both. A record is believed only while its pid runs the recorded program, started at the recorded time (pids are
reused); a stale one is removed when it is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from coordinator.errors import EmbeddedError

AGENT_FILE = "agent.pid"
AGENT_MODULE = "nodeagent.cli"
COORDINATOR_FILE = "coordinator.pid"
COORDINATOR_MODULE = "console.child"
AGENT_STOP_S = 20.0
"""How long the local agent gets to hand its running tasks back (it takes its own grace, 5 s) before it is killed."""
COORDINATOR_STOP_S = 20.0
"""How long `aidd stop` gives the background coordinator to stop its stores before it is killed."""
ANSWER_TIMEOUT_S = 10.0
"""How long a later `aidd` waits for a live background coordinator to answer before giving up on it."""


@dataclass(frozen=True)
class Detached:
    """One process recorded in a pid file: who it is, and the coordinator URL it serves or works for."""

    pid: int
    started: float
    """Its start time (psutil's `create_time`): a reused pid has another one."""
    program: str
    """The module it runs (`nodeagent.cli`, `aiddclient.cli`), looked for in its command line."""
    url: str
    state_dir: str

    def alive(self) -> bool:
        """Whether the recorded process still runs: same pid, same start time, same program (a zombie is gone)."""
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.started) < 1.0 and self.program in proc.cmdline()
            return same and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def child_env() -> dict[str, str]:
    """This environment, with this interpreter's import path: the child imports what the console imports."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def spawn(argv: list[str], log_path: Path, pid_file: Path, url: str) -> tuple[Detached, subprocess.Popen[bytes]]:
    """Start `argv` (`python -m MODULE ...`) detached and record it in `pid_file`.

    Detached: a session of its own (no terminal hang-up reaches it), no parent-death signal, stdin /dev/null,
    output appended to `log_path`. It outlives this process however that ends.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=child_env(), start_new_session=True)
    return write_record(process.pid, argv[argv.index("-m") + 1], url, pid_file), process


def write_record(pid: int, program: str, url: str, pid_file: Path) -> Detached:
    """Record the running process `pid` (which runs `program` for `url`) in `pid_file`, atomically."""
    found = Detached(pid, psutil.Process(pid).create_time(), program, url, str(pid_file.parent))
    temporary = pid_file.with_name(pid_file.name + ".new")
    temporary.write_text(json.dumps(asdict(found)) + "\n")
    temporary.replace(pid_file)
    return found


def recorded(pid_file: Path, program: str) -> Detached | None:
    """The live process `pid_file` names if it runs `program`; a stale or unreadable file is removed."""
    try:
        record = Detached(**json.loads(pid_file.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        record = None
    if record is not None and record.program == program and record.alive():
        return record
    pid_file.unlink(missing_ok=True)
    return None


def stop(record: Detached, pid_file: Path, grace_s: float) -> None:
    """SIGTERM the record's process group, SIGKILL it after `grace_s`, wait until it is gone; drop the pid file.

    Its process group: it was started as a session leader, so this also reaches helpers it started in it.
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if record.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, sig)
        deadline = time.monotonic() + wait_s
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


# -- the background coordinator ---------------------------------------------------------------------------

def find_coordinator(state_dir: Path) -> Detached | None:
    """The background coordinator of this state directory once it answers; None if none runs (a stale record is
    removed).

    Raises:
        EmbeddedError: one runs but does not answer within ANSWER_TIMEOUT_S (it holds the state directory).
    """
    record = recorded(state_dir / COORDINATOR_FILE, COORDINATOR_MODULE)
    if record is None:
        return None
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while _health(record.url) is None:
        if not record.alive():
            return find_coordinator(state_dir)
        if time.monotonic() > deadline:
            raise EmbeddedError(f"the background coordinator (pid {record.pid}) at {record.url} does not answer; "
                                f"`aidd stop` stops it (log: {state_dir / 'coordinator.log'})")
        time.sleep(0.2)
    return record


def stop_all(state_dir: Path) -> list[str]:
    """Stop what runs in the background for this state directory, one line each of what was stopped.

    The local agent first, while its coordinator still answers: it hands its running tasks back (they run again
    later, from the start). Then the background coordinator, which stops its embedded stores.
    """
    stopped = []
    agent_file = state_dir / AGENT_FILE
    agent = recorded(agent_file, AGENT_MODULE)
    if agent is not None:
        stop(agent, agent_file, AGENT_STOP_S)
        stopped.append(f"stopped the local agent (pid {agent.pid}); its running tasks were handed back")
    coordinator_file = state_dir / COORDINATOR_FILE
    coordinator = recorded(coordinator_file, COORDINATOR_MODULE)
    if coordinator is not None:
        stop(coordinator, coordinator_file, COORDINATOR_STOP_S)
        stopped.append(f"stopped the background coordinator (pid {coordinator.pid}) at {coordinator.url}")
    return stopped


def _health(url: str) -> int | None:
    """The status of `url`'s health check; None when nothing answers there."""
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code
    except httpx.HTTPError:
        return None
