"""Kills the agent's task process groups when the agent dies, however it dies (`kill -9` included).

A task's own process dies with the agent (its parent-death signal), but not what that process started:
helpers left in its process group would run on while the coordinator hands the task to another host,
so two attempts would run at once. The keeper is a tiny process of its own (standard library only,
started with `python -S -I`) reading a pipe from the agent: the agent writes `+PGID` when a task starts
(`!PGID` for an exclusive task) and `-PGID` once it has ended. When the agent dies the kernel closes the
pipe, and the keeper kills every process group it still holds, then exits.

It is also the fence of an agent that is alive but cannot act — stopped (SIGSTOP), frozen in a long
pause, its event loop blocked: after each answered heartbeat the agent writes `@EXCLUSIVE ALL`, the
seconds it has to renew before the keeper kills the exclusive tasks' groups (before the coordinator's
heartbeat timeout hands them to another host) and before it kills every group (the agent's disconnect
grace: other tasks outlive a silent coordinator, not a silent agent forever).
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
        self._deadlines = (math.inf, math.inf)
        self._lapsed = (-math.inf, -math.inf)
        """When the latest exclusive / all-groups deadline ran out before a renewal came (monotonic)."""
        self._exclusive: set[int] = set()

    def start(self) -> None:
        """Start the keeper in a session of its own (a signal to the agent's group does not reach it)."""
        self._proc = subprocess.Popen([sys.executable, "-S", "-I", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, start_new_session=True)

    def hold(self, pgid: int, exclusive: bool = False) -> None:
        """Kill this process group if the agent dies, or stays silent past the deadline of its kind (a group
        held again changes its kind)."""
        (self._exclusive.add if exclusive else self._exclusive.discard)(pgid)
        self._send(f"{'!' if exclusive else '+'}{pgid}")

    def release(self, pgid: int) -> None:
        """The group has ended (and been killed): forget it."""
        self._exclusive.discard(pgid)
        self._send(f"-{pgid}")

    def renew(self, exclusive_s: float, all_s: float) -> None:
        """Unless renewed within `exclusive_s`, the keeper kills the exclusive groups; within `all_s`, every
        group. A renewal that comes too late is logged: the keeper has already killed."""
        now = time.monotonic()
        exclusive_at, all_at = self._deadlines
        if now > all_at:
            log.error("the task keeper killed every task of this agent: it was frozen or cut off for %.0fs",
                      now - all_at + all_s)
        elif now > exclusive_at and self._exclusive:
            log.error("the task keeper killed %d exclusive task(s): this agent was frozen or cut off past its fence",
                      len(self._exclusive))
        self._lapsed = (exclusive_at if now > exclusive_at else self._lapsed[0],
                        all_at if now > all_at else self._lapsed[1])
        self._deadlines = (now + exclusive_s, now + all_s)
        self._send(f"@{max(exclusive_s, 0.0):.3f} {max(all_s, 0.0):.3f}")

    def killed_since(self, since: float, exclusive: bool) -> bool:
        """Whether the keeper's deadline for this kind of group ran out after `since` (monotonic): a task of
        that kind that died of SIGKILL meanwhile was killed by the keeper, not by its own doing."""
        now = time.monotonic()
        exclusive_at, all_at = self._deadlines
        expired = [all_at, self._lapsed[1], *([exclusive_at, self._lapsed[0]] if exclusive else [])]
        return self._proc is not None and any(since < at <= now for at in expired)

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
    """The keeper process: hold the groups named on stdin; kill (and forget) the exclusive ones when the agent's
    exclusive deadline runs out, all of them when its other deadline does, and those still held at end of
    input."""
    held: dict[int, bool] = {}  # process group -> exclusive
    deadlines, pending = [math.inf, math.inf], b""
    while True:
        watched = [deadlines[0]] if any(held.values()) else []  # the exclusive deadline, while it holds such
        watched += [deadlines[1]] if held else []
        due = min(watched, default=math.inf)
        wait = max(0.0, due - time.monotonic()) if due < math.inf else None
        if not select.select([sys.stdin], [], [], wait)[0]:  # the agent is silent past a deadline
            now = time.monotonic()
            everything = now >= deadlines[1]
            doomed = {pgid for pgid, exclusive in held.items() if exclusive or everything}
            _kill(doomed)
            for pgid in doomed:
                del held[pgid]
            deadlines = [math.inf if now >= at else at for at in deadlines]
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                kind, value = line[:1], line[1:]
                if kind in (b"+", b"!"):
                    held[int(value)] = kind == b"!"
                elif kind == b"-":
                    held.pop(int(value), None)
                elif kind == b"@":
                    now = time.monotonic()
                    deadlines = [now + float(part) for part in value.split()[:2]]
    _kill(set(held))
    return 0


def _kill(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
