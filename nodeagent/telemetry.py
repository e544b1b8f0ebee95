"""Heartbeat and lease bodies: host use from psutil, GPUs from the probe, and what the agent's own tasks hold.

Free resources in a lease are the host's capacity minus what running tasks asked for (not what the
host measures), so a busy task does not make the agent refuse work it has room for; memory is also
capped by what the host has available.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import psutil

from aiddwire import GpuFree, GpuUsage, Heartbeat, LeaseAsk, TaskUse, gpu_share
from nodeagent.gpu import GpuProbe
from nodeagent.inventory import GIB, Host, usable_cpus


class RunView(Protocol):
    """What telemetry reads of a running attempt (a `TaskRun`)."""

    task_id: str
    attempt_id: str
    pid: int | None
    gpus: list[int]
    resources: dict[str, float]

    def pids(self) -> list[int]: ...


def cpu_places(cpus: list[int], stat: Path = Path("/proc/stat")) -> list[int]:
    """The places of `cpus` (CPU numbers) in psutil's per-CPU list. On Linux that list has one entry per `cpuN` line
    of /proc/stat, online CPUs only: with a CPU offline (hot-unplugged, or SMT siblings under `nosmt`) the numbers
    and the places part. Elsewhere the list has every CPU, in order."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return cpus
    listed = [int(line[3:].split(maxsplit=1)[0]) for line in lines if line.startswith("cpu") and line[3:4].isdigit()]
    place = {cpu: i for i, cpu in enumerate(listed)}
    return [place[cpu] for cpu in cpus if cpu in place]


class Telemetry:
    """Builds the bodies of heartbeats and leases."""

    def __init__(self, probe: GpuProbe, host: Host) -> None:
        self.probe, self.host = probe, host
        self.cpus = usable_cpus()
        """The CPUs whose use is reported (host.cpu_cores of them)."""
        self._places = cpu_places(self.cpus)
        """Where they are in psutil's per-CPU list."""
        self.cpu_percent()  # the first reading only starts the measurement

    def cpu_percent(self) -> float:
        """How busy this agent's CPUs were since the last call, in percent: the mean of theirs alone, so that an
        agent given a few of a machine's cores reports their use, not the machine's."""
        per_cpu = psutil.cpu_percent(interval=None, percpu=True)
        mine = [per_cpu[i] for i in self._places if i < len(per_cpu)]
        return round(sum(mine) / len(mine), 1) if mine else 0.0

    def heartbeat(self, runs: Iterable[RunView]) -> Heartbeat:
        """Used CPU and memory, per-GPU use, and each task's own GPU memory and utilisation."""
        runs = list(runs)
        percent = self.cpu_percent()
        memory = psutil.virtual_memory()
        self.probe.set_busy(g for run in runs for g in run.gpus)
        usage = {u["index"]: u for u in self.probe.usage()} if self.host.gpus else {}
        return {"used_cpu": round(percent / 100 * self.host.cpu_cores, 2), "cpu_percent": percent,
                "used_memory_gb": round((memory.total - memory.available) / GIB, 2),
                "gpus": list(usage.values()),
                "current_tasks": sorted({run.task_id for run in runs}),
                "tasks": self._task_detail(runs, usage)}

    def _task_detail(self, runs: list[RunView], usage: dict[int, GpuUsage]) -> list[TaskUse]:
        processes = self.probe.processes() if usage and runs else []
        detail: list[TaskUse] = []
        for run in runs:
            entry: TaskUse = {"task_id": run.task_id, "attempt_id": run.attempt_id, "pid": run.pid, "gpus": run.gpus}
            if usage:
                tree = set(run.pids()) if processes else set()
                mine = [p for p in processes if p.pid in tree]
                held = sorted(set(run.gpus) | {p.index for p in mine})
                utils = [usage[i]["utilization"] for i in held if i in usage]
                entry["gpu_memory_gb"] = round(sum(p.memory_gb for p in mine), 3)
                entry["gpu_utilization"] = round(sum(utils) / len(utils), 1) if utils else None
            detail.append(entry)
        return detail

    def free(self, runs: Iterable[RunView]) -> LeaseAsk:
        """CPU, memory and per-GPU share and memory not yet promised to a running task."""
        runs = list(runs)
        cpu = self.host.cpu_cores - sum(float(r.resources.get("cpu", 1.0)) for r in runs)
        promised = sum(float(r.resources.get("memory_gb", 0.0)) for r in runs)
        memory = min(self.host.memory_gb - promised, psutil.virtual_memory().available / GIB)
        measured = {u["index"]: u for u in self.probe.usage()} if self.host.gpus else {}
        gpus: list[GpuFree] = []
        for gpu in self.host.gpus:
            share, gpu_memory = 0.0, 0.0
            for run in runs:
                if gpu.index in run.gpus:
                    share += gpu_share(float(run.resources.get("gpu", 1.0)), len(run.gpus))
                    gpu_memory += float(run.resources.get("gpu_memory_gb", 0.0))
            free_memory = gpu.memory_gb - gpu_memory
            if gpu.index in measured and measured[gpu.index]["memory_total_gb"]:
                now = measured[gpu.index]
                free_memory = min(free_memory, now["memory_total_gb"] - now["memory_used_gb"])
            gpus.append({"index": gpu.index, "free": round(max(0.0, 1.0 - share), 4),
                         "memory_gb": round(max(0.0, free_memory), 3)})
        return {"cpu": round(max(0.0, cpu), 3), "memory_gb": round(max(0.0, memory), 3), "gpus": gpus}
