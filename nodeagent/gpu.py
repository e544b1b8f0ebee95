"""GPUs behind one small probe: NVML in production, a fake inventory for tests and demos.

Follows nvitop's pattern: pynvml is imported and initialised lazily on first use, every NVML call goes
through one helper that turns NVML's errors into "not available" (anything else is a bug, and surfaces),
and "no pynvml" or "no driver" is a normal case that simply means no GPUs. `AIDD_FAKE_GPUS` (a JSON list)
swaps in `FakeGpus`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from aiddwire import GpuUsage

log = logging.getLogger(__name__)
GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as registered: what it is."""

    index: int
    name: str
    uuid: str
    memory_gb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GpuProcess:
    """GPU memory one process holds on one GPU (to attribute GPU use to tasks)."""

    pid: int
    index: int
    memory_gb: float


class GpuProbe(Protocol):
    """What the agent asks about GPUs; every method returns empty lists when there are none."""

    def inventory(self) -> list[GpuInfo]: ...

    def usage(self) -> list[GpuUsage]: ...

    def processes(self) -> list[GpuProcess]: ...

    def set_busy(self, indices: Iterable[int]) -> None:
        """Which GPUs the agent's tasks hold (the fake shows them busy; NVML measures instead)."""


class NvmlProbe:
    """The real GPUs, through pynvml (package nvidia-ml-py); no pynvml or no driver means no GPUs."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] | None = None

    def _devices(self) -> list[Any]:
        if self._handles is None:
            self._handles = []
            try:
                import pynvml
            except ImportError as exc:
                log.info("no GPUs: %s", exc)
                return self._handles
            try:
                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            except pynvml.NVMLError as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                log.info("no GPUs: %s", exc or type(exc).__name__)
        return self._handles

    def _query(self, function: str, handle: Any, *args: Any) -> Any:
        """One NVML call; an NVML error (not supported, no permission, GPU lost, ...) is None, anything else a
        bug that surfaces."""
        try:
            return getattr(self._nvml, function)(handle, *args)
        except self._nvml.NVMLError:
            return None

    def inventory(self) -> list[GpuInfo]:
        found = []
        for i, handle in enumerate(self._devices()):
            memory = self._query("nvmlDeviceGetMemoryInfo", handle)
            found.append(GpuInfo(i, _text(self._query("nvmlDeviceGetName", handle) or "GPU"),
                                 _text(self._query("nvmlDeviceGetUUID", handle) or ""),
                                 round(memory.total / GIB, 2) if memory else 0.0))
        return found

    def usage(self) -> list[GpuUsage]:
        usage = []
        for i, handle in enumerate(self._devices()):
            rates = self._query("nvmlDeviceGetUtilizationRates", handle)
            memory = self._query("nvmlDeviceGetMemoryInfo", handle)
            temperature = self._query("nvmlDeviceGetTemperature", handle, 0)  # NVML_TEMPERATURE_GPU
            milliwatts = self._query("nvmlDeviceGetPowerUsage", handle)
            usage.append(GpuUsage(index=i, utilization=float(rates.gpu) if rates else 0.0,
                                  memory_used_gb=round(memory.used / GIB, 3) if memory else 0.0,
                                  memory_total_gb=round(memory.total / GIB, 3) if memory else 0.0,
                                  temperature=float(temperature) if temperature is not None else None,
                                  power_w=milliwatts / 1000.0 if milliwatts is not None else None))
        return usage

    def processes(self) -> list[GpuProcess]:
        found = []
        for i, handle in enumerate(self._devices()):
            for proc in self._query("nvmlDeviceGetComputeRunningProcesses", handle) or []:
                used = proc.usedGpuMemory if isinstance(proc.usedGpuMemory, int) else 0  # None without permission
                found.append(GpuProcess(int(proc.pid), i, round(used / GIB, 3)))
        return found

    def set_busy(self, indices: Iterable[int]) -> None:
        """Nothing to do: NVML measures the real use."""


class FakeGpus:
    """A configurable GPU inventory and utilisation, for tests and the console demo.

    Each GPU is a mapping with `name`, `memory_gb` and optionally `uuid`, `utilization`, `memory_used_gb`,
    `temperature`, `power_w`. Without a fixed utilisation, a GPU shows `busy_utilization` while a task
    holds it and 0 otherwise, so a demo looks alive.
    """

    def __init__(self, gpus: Iterable[Mapping[str, Any]], busy_utilization: float = 87.0) -> None:
        self.gpus = [dict(g) for g in gpus]
        self.busy_utilization = busy_utilization
        self.busy: set[int] = set()
        self.fake_processes: list[GpuProcess] = []

    @classmethod
    def from_json(cls, text: str) -> FakeGpus:
        """Parse `AIDD_FAKE_GPUS`; raises ValueError with a readable message."""
        try:
            gpus = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"AIDD_FAKE_GPUS: not JSON: {exc}") from None
        if not isinstance(gpus, list) or not all(isinstance(g, dict) for g in gpus):
            raise ValueError('AIDD_FAKE_GPUS: must be a JSON list like [{"name": "A100", "memory_gb": 80}]')
        return cls(gpus)

    def inventory(self) -> list[GpuInfo]:
        return [GpuInfo(i, str(g.get("name", "FakeGPU")), str(g.get("uuid", f"GPU-fake-{i:04d}")),
                        float(g.get("memory_gb", 16.0))) for i, g in enumerate(self.gpus)]

    def usage(self) -> list[GpuUsage]:
        usage = []
        for i, g in enumerate(self.gpus):
            total = float(g.get("memory_gb", 16.0))
            busy = i in self.busy
            util = float(g.get("utilization", self.busy_utilization if busy else 0.0))
            used = float(g.get("memory_used_gb", total * 0.6 if busy else 0.0))
            usage.append(GpuUsage(index=i, utilization=util, memory_used_gb=used, memory_total_gb=total,
                                  temperature=g.get("temperature", 65.0 if busy else 35.0),
                                  power_w=g.get("power_w", 250.0 if busy else 60.0)))
        return usage

    def processes(self) -> list[GpuProcess]:
        return list(self.fake_processes)

    def set_busy(self, indices: Iterable[int]) -> None:
        self.busy = set(indices)


def probe_from_env(env: Mapping[str, str] | None = None) -> GpuProbe:
    """`FakeGpus` when AIDD_FAKE_GPUS is set (ValueError if it is malformed), else the NVML probe."""
    env = os.environ if env is None else env
    fake = env.get("AIDD_FAKE_GPUS", "").strip()
    return FakeGpus.from_json(fake) if fake else NvmlProbe()


def _text(value: str | bytes) -> str:
    """NVML returns bytes in older bindings and str in newer ones."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
