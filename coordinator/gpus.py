"""GPU accounting in one place: which running task holds how much of which GPU, and which GPUs sit idle.

A GPU is *allocated* while a running task holds a share of it, *busy* while its utilisation is at least
`gpu_idle_threshold` percent, and *idle* when it is allocated but has not been busy for `gpu_idle_after`
seconds (a stuck data loader, CPU-bound preparation on a GPU slot): the operator should look at its task.
How long a GPU has been below the threshold is counted from the later of its last busy heartbeat (kept per
GPU in the worker's Redis hash, see `busy_field`) and the start of the newest task holding it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiddwire import gpu_share
from coordinator.config import Settings


@dataclass
class GpuHold:
    """What one GPU has given to running tasks: its share (0..1), memory, and the tasks themselves."""

    share: float = 0.0
    memory_gb: float = 0.0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    since: float = -math.inf
    """When the newest of its tasks started (seconds since the epoch)."""


def holds(running: Iterable[Any]) -> dict[int, GpuHold]:
    """Per GPU index, what the running tasks of one worker hold.

    Each row has `gpus` (indices), `gpu` and `gpu_memory_gb` (what it asked), and may have `id`, `name`,
    `attempts` and `started_at` (to name the task on its GPUs).
    """
    held: dict[int, GpuHold] = {}
    for row in running:
        indices = [int(i) for i in row.gpus or []]
        for index in indices:
            hold = held.setdefault(index, GpuHold())
            hold.share = min(1.0, hold.share + gpu_share(row.gpu, len(indices)))
            hold.memory_gb += row.gpu_memory_gb
            started: datetime | None = getattr(row, "started_at", None)
            if started is not None:
                hold.since = max(hold.since, started.timestamp())
            if getattr(row, "id", None) is not None:
                hold.tasks.append({"task_id": str(row.id), "name": row.name, "attempt": row.attempts})
    return held


def busy_field(index: int) -> str:
    """The field of a worker's Redis hash holding when GPU `index` was last busy (seconds since the epoch)."""
    return f"gpu_busy:{index}"


def busy_indices(gpus: Sequence[Any], settings: Settings) -> list[int]:
    """The GPUs of a heartbeat (objects with `index` and `utilization`) that are busy now."""
    return [g.index for g in gpus if g.utilization >= settings.gpu_idle_threshold]


def idle_seconds(utilization: float | None, hold: GpuHold | None, busy_at: float | None, now: float,
                 settings: Settings) -> float | None:
    """Seconds an allocated GPU has been below `gpu_idle_threshold`, once that is `gpu_idle_after` or more.

    None when it is not flagged: not allocated, busy now, idle for less than `gpu_idle_after`, or without a
    reading (an offline worker's readings are stale, not evidence).
    """
    if hold is None or hold.share <= 0 or utilization is None:
        return None
    if utilization >= settings.gpu_idle_threshold:
        return None
    quiet = now - max(hold.since, busy_at if busy_at is not None else -math.inf)
    return round(quiet, 1) if quiet >= settings.gpu_idle_after and math.isfinite(quiet) else None


def gpu_views(registered: Sequence[Mapping[str, Any]], readings: Sequence[Mapping[str, Any]] | None,
              held: Mapping[int, GpuHold], busy_at: Mapping[int, float], now: float,
              settings: Settings) -> list[dict[str, Any]]:
    """A worker's GPUs as the API shows them: what each is, its latest reading (None when the worker is offline),
    the tasks holding it, and whether it is allocated, busy, and idle (with `idle_s`, the seconds below the
    threshold once flagged)."""
    live = {int(r["index"]): r for r in readings or []}
    views = []
    for gpu in registered:
        index = int(gpu["index"])
        reading = live.get(index) if readings is not None else None
        hold = held.get(index)
        utilization = float(reading.get("utilization") or 0.0) if reading is not None else None
        idle = idle_seconds(utilization, hold, busy_at.get(index), now, settings)
        views.append({**gpu, **(reading or {}), "index": index, "tasks": hold.tasks if hold else [],
                      "allocated": hold is not None and hold.share > 0,
                      "busy": utilization is not None and utilization >= settings.gpu_idle_threshold,
                      "idle": idle is not None, "idle_s": idle})
    return views


def gpu_totals(workers: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """GPUs of the workers that are not offline: how many, allocated, busy, and allocated but idle."""
    return count_gpus((bool(g.get("allocated")), bool(g.get("busy")), bool(g.get("idle")))
                      for w in workers if w.get("status") != "offline" for g in w.get("gpus") or [])


def count_gpus(flags: Iterable[tuple[bool, bool, bool]]) -> dict[str, int]:
    """The GPU totals of `gpu_totals` from each GPU's (allocated, busy, idle) flags (the console counts its
    typed views with it)."""
    totals = {"gpus": 0, "allocated_gpus": 0, "busy_gpus": 0, "idle_gpus": 0}
    for allocated, busy, idle in flags:
        totals["gpus"] += 1
        totals["allocated_gpus"] += allocated
        totals["busy_gpus"] += busy
        totals["idle_gpus"] += idle
    return totals
