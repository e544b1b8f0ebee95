"""Processes a task left outside its process group (`setsid daemon &`): found, killed and reaped when it ends.

A task's process group dies with it, but a helper that started a session of its own is not in that group.
On Linux the agent makes itself a child subreaper, so such an orphan becomes the agent's child when the
task's process exits (instead of init's); it still carries the task's environment, whose AIDD_ATTEMPT_ID
says whose it is. When an attempt ends, its strays (and what they started) are killed, so nothing a task
started outlives it, and none holds its output pipes open to delay its report.

Orphans that end on their own become the agent's zombies; `ZombieSweep` reaps those no one else waits for
(asyncio waits for the processes it started within milliseconds; a zombie still there a whole sweep later
is an orphan's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import psutil

log = logging.getLogger(__name__)
PR_SET_CHILD_SUBREAPER = 36
MARKER = "AIDD_ATTEMPT_ID"


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux); whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def kill_strays(attempt_id: str) -> int:
    """Kill the agent's children (orphans handed to it) that belong to `attempt_id`, with their descendants, and
    reap them; returns how many were found."""
    strays = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.environ().get(MARKER) == attempt_id:
                strays.append(child)
    for stray in strays:
        with contextlib.suppress(psutil.Error):
            for process in [*stray.children(recursive=True), stray]:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(stray.pid, 0)
    if strays:
        log.warning("attempt %s left %d process(es) of its own session behind: killed", attempt_id, len(strays))
    return len(strays)


class ZombieSweep:
    """Reaps zombie children that nobody else reaped since the previous sweep (orphans that ended by themselves)."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def sweep(self) -> int:
        """Reap the zombies already seen last time; returns how many."""
        zombies = set()
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.status() == psutil.STATUS_ZOMBIE:
                    zombies.add(child.pid)
        reaped = 0
        for pid in zombies & self._seen:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
                reaped += 1
        self._seen = zombies - self._seen
        return reaped
