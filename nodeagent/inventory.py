"""What this host is: hostname, cores, memory, GPUs, and which worker group(s) it serves."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from nodeagent import __version__
from nodeagent.gpu import GpuInfo

GIB = 1024**3
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""Group, label and service names, as the coordinator accepts them (they become parts of Redis keys)."""


def detect_group(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> str:
    """The group of this host: WORKER_GROUP, else `docker`, else `k8s`, else the OS name (`linux`, ...)."""
    env = os.environ if env is None else env
    named = env.get("WORKER_GROUP", "").split(",")[0].strip()
    if named:
        return named
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "var/run/secrets/kubernetes.io").exists():
        return "k8s"
    return platform.system().lower() or "default"


def serve_groups(given: Sequence[str], env: Mapping[str, str] | None = None, root: Path = Path("/")) -> list[str]:
    """Groups to serve: the ones given (flags or WORKER_GROUP), else the detected one plus `default`.

    Tasks submitted without a group are in `default`; an agent nobody configured should run them.
    """
    env = os.environ if env is None else env
    if given:
        return sorted(set(given))
    from_env = [g.strip() for g in env.get("WORKER_GROUP", "").split(",") if g.strip()]
    if from_env:
        return sorted(set(from_env))
    return sorted({detect_group(env, root), "default"})


@dataclass
class Host:
    """The registration body's facts about this host."""

    hostname: str
    cpu_cores: float
    memory_gb: float
    gpus: list[GpuInfo] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    slots: int = 1

    def registration(self) -> dict[str, Any]:
        """The body of POST /api/v1/workers/register."""
        return {"hostname": self.hostname, "services": self.services, "groups": self.groups, "labels": self.labels,
                "cpu_cores": self.cpu_cores, "memory_gb": self.memory_gb, "gpus": [g.as_dict() for g in self.gpus],
                "slots": self.slots, "agent_version": __version__}


def usable_cpus() -> list[int]:
    """The logical CPUs this agent may run on: its affinity mask where the system has one (Linux), so that an agent
    under `taskset` or in a container given a cpuset counts and measures its own, not the machine's; else all."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(psutil.cpu_count(logical=True) or 1))


def describe_host(gpus: list[GpuInfo], groups: list[str], labels: Sequence[str], services: Sequence[str],
                  slots: int | None, hostname: str | None = None) -> Host:
    """This host's inventory; GPUs add the label `gpu` (a task can require it)."""
    cores = len(usable_cpus())
    all_labels = set(labels) | ({"gpu"} if gpus else set())
    return Host(hostname=hostname or socket.gethostname() or "localhost", cpu_cores=float(cores),
                memory_gb=round(psutil.virtual_memory().total / GIB, 2), gpus=gpus, groups=groups,
                labels=sorted(all_labels), services=sorted(set(services)), slots=slots or cores)


MIN_FREE_BYTES = 16 * 1024**2
"""A work dir with less room than this cannot take tasks (their inputs, outputs and scratch files)."""


def work_dir_problem(work_dir: Path) -> str | None:
    """What keeps `work_dir` from holding task files (missing and cannot be made, read-only, full), or None."""
    probe = work_dir / f".aidd-probe-{os.getpid()}"
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * 4096)
        free = shutil.disk_usage(work_dir).free
    except OSError as exc:
        return f"work dir {work_dir}: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    if free < MIN_FREE_BYTES:
        return f"work dir {work_dir}: only {free // 1024} KiB free"
    return None
