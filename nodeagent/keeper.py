"""Kills the agent's task process groups when the agent dies, however it dies (`kill -9` included).

A task's own process dies with the agent (its parent-death signal), but not what that process started:
helpers left in its process group would run on while the coordinator hands the task to another host,
so two attempts would run at once. The keeper is a tiny process of its own (standard library only,
started with `python -S -I`) reading a pipe from the agent: the agent writes `+PGID` when a task starts
and `-PGID` once it has ended. When the agent dies the kernel closes the pipe, and the keeper kills
every process group it still holds, then exits.

It is also the fence of an agent that is alive but cannot act — stopped (SIGSTOP), frozen in a long
pause, its event loop blocked: after each answered heartbeat the agent writes `@SECONDS`, the time it
has to renew; if that passes, the keeper kills the groups it holds, before the coordinator's heartbeat
timeout hands their tasks to another host.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import subprocess
import sys
import time

log = logging.getLogger(__name__)


class Keeper:
    """The agent's side: starts the keeper process and tells it which process groups to hold."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._deadline = math.inf

    def start(self) -> None:
        """Start the keeper in a session of its own (a signal to the agent's group does not reach it)."""
        self._proc = subprocess.Popen([sys.executable, "-S", "-I", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, start_new_session=True)

    def hold(self, pgid: int) -> None:
        """Kill this process group if the agent dies."""
        self._send(f"+{pgid}")

    def release(self, pgid: int) -> None:
        """The group has ended (and been killed): forget it."""
        self._send(f"-{pgid}")

    def renew(self, seconds: float) -> None:
        """Unless renewed within `seconds`, the keeper kills every group it holds."""
        self._deadline = time.monotonic() + seconds
        self._send(f"@{max(seconds, 0.0):.3f}")

    def fenced(self) -> bool:
        """Whether the last renewal ran out (so a task killed now was killed by the keeper)."""
        return self._proc is not None and time.monotonic() > self._deadline

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(f"{line}\n".encode())
            self._proc.stdin.flush()
        except OSError as exc:  # it died: tasks still die with their direct process, not their helpers
            log.warning("the task keeper is gone (%s); helpers of tasks may outlive a crash of this agent", exc)
            self._proc = None

    def close(self) -> None:
        """Close the pipe (the keeper kills whatever is still held, normally nothing) and wait for it."""
        if self._proc is None:
            return
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._proc = None


def main() -> int:
    """The keeper process: hold the groups named on stdin; kill them when the agent's renewal runs out (and
    forget them), and kill those still held at end of input."""
    held: set[int] = set()
    deadline, pending = math.inf, b""
    while True:
        wait = max(0.0, deadline - time.monotonic()) if held and deadline < math.inf else None
        if not select.select([sys.stdin], [], [], wait)[0]:  # the agent is silent past its renewal
            _kill(held)
            held.clear()
            deadline = math.inf
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                kind, value = line[:1], line[1:]
                if kind == b"+":
                    held.add(int(value))
                elif kind == b"-":
                    held.discard(int(value))
                elif kind == b"@":
                    deadline = time.monotonic() + float(value)
    _kill(held)
    return 0


def _kill(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
