"""Processes the tests start and stop, by pid."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil


def gone(pid: int) -> bool:
    """Whether a process has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_in(state: Path) -> list[str]:
    """Live processes whose command line or working directory is in `state` (the embedded servers run there)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status", "name"]):
        with contextlib.suppress(psutil.Error):
            where = " ".join([*(proc.info["cmdline"] or []), proc.info["cwd"] or ""])
            if str(state) in where and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {proc.info['name']}")
    return found
