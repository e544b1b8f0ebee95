"""The wire between agents and the coordinator, in one place: its words (events, commands, end and stop reasons),
its bodies (lease, report, heartbeat, GPU use) and the GPU-share rule both sides count with.

The agent, the coordinator and the console import it; it imports nothing but the standard library, because the
agent ships alone (`pip install ./nodeagent` carries this package with it). The coordinator validates these bodies
with its own pydantic models (`coordinator.schemas`), which add the limits an API enforces.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict


class EventKind(StrEnum):
    """What an agent reports about one attempt (`TaskEvent.event`)."""

    STARTED = "started"
    PROGRESS = "progress"
    LOG = "log"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HANDBACK = "handback"
    """The agent gives the attempt back without using a retry (it stops, or it cannot run tasks now)."""


FINAL_EVENTS = frozenset({EventKind.SUCCEEDED, EventKind.FAILED, EventKind.HANDBACK})
"""The events that end an attempt."""


class CommandKind(StrEnum):
    """An operator's command to a worker, delivered with its heartbeat answers."""

    DRAIN = "drain"
    RESUME = "resume"
    CANCEL_TASK = "cancel-task"
    """Kill one attempt (args: task_id, attempt_id); acknowledged once its process is gone."""
    SHUTDOWN = "shutdown"


class EndReason(StrEnum):
    """Why an attempt ended; retries are decided on this."""

    SUCCEEDED = "succeeded"
    ERROR = "error"  # non-zero exit or an exception in a plugin
    PERMANENT = "permanent"  # the task said retrying cannot help (bad input)
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"


FailureReason = Literal["error", "permanent", "timeout"]
"""The `EndReason`s an agent may give with a `failed` event (the others are the coordinator's); spelled as the
values, so the API's 422 names them as they are sent (a test holds them to `EndReason`)."""


class StopReason(StrEnum):
    """Why the agent kills an attempt before it ends by itself, which decides what it reports."""

    CANCEL = "cancel"
    """A `cancel-task` command: the coordinator has ended the attempt already; nothing is reported."""
    STALE = "stale"
    """The coordinator no longer counts the attempt as this worker's; nothing is reported."""
    HANDBACK = "handback"
    """The agent stops: the attempt is handed back."""
    FENCE = "fence"
    """No coordinator answered past the deadline (or the agent's keeper killed it): handed back."""
    TIMEOUT = "timeout"
    """The task's own `timeout_s`: it fails with `EndReason.TIMEOUT`."""


UNREPORTED = frozenset({StopReason.CANCEL, StopReason.STALE})
"""Stops after which the agent reports nothing (the attempt is no longer its to report)."""
HANDED_BACK = frozenset({StopReason.HANDBACK, StopReason.FENCE})
"""Stops reported as `EventKind.HANDBACK`."""


def gpu_share(asked: float, gpu_count: int) -> float:
    """The share of each of its GPUs a task holds: whole GPUs for one or more, else the fraction it asked.

    Python counts with this alone; the claim script (`coordinator/lua/claim.lua`, `pick_gpus`) hands GPUs out by
    the same rule, and `tests/test_gpu_accounting.py` checks the two agree.
    """
    return 1.0 if asked >= 1 or gpu_count > 1 else asked


_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x2E for byte in range(256))
_LONG_NUMBER = b"0" * 19


def may_hold_long_integer(text: bytes | bytearray) -> bool:
    """Whether the JSON `text` may hold an integer outside -2**63 .. 2**64 - 1, which orjson (the coordinator's
    and the agent's JSON) reads as a float, losing digits: every such integer has 19 digits or more, so a text
    without a run of 19 digits holds none. The run may be in a string: the caller then only reads it again.

    Each digit mapped to 0 and every other byte to `.`, then a substring search: a tenth of what a regular
    expression costs (the agent checks every message from its plugin hosts).
    """
    return _LONG_NUMBER in text.translate(_DIGITS_AS_ZERO)


class GpuUsage(TypedDict):
    """One GPU's reading in a heartbeat; temperature and power are None where the device does not say."""

    index: int
    utilization: float
    memory_used_gb: float
    memory_total_gb: float
    temperature: float | None
    power_w: float | None


class GpuFree(TypedDict):
    """What is left of one GPU for new tasks, as a lease asks: a share (0..1) and memory."""

    index: int
    free: float
    memory_gb: float


class Resources(TypedDict):
    """What a task asks its worker for."""

    cpu: float
    memory_gb: float
    gpu: float
    gpu_memory_gb: float


class LeaseAsk(TypedDict):
    """What an agent has free now, sent with a lease (`LeaseRequest`, with `max_tasks` and `wait_s`)."""

    cpu: float
    memory_gb: float
    gpus: list[GpuFree]


class LeasedTask(TypedDict):
    """One task a lease hands out, with its new attempt (the fencing token of every report about it)."""

    task_id: str
    attempt_id: str
    attempt: int
    service: str
    task_type: str
    name: str
    input_params: dict[str, Any]
    timeout_s: int | None
    gpus: list[int]
    input_files: list[str]
    outputs: list[str]
    priority: int
    group: str
    exclusive: bool
    resources: Resources


class LogLine(TypedDict):
    """One output line of an attempt."""

    stream: str
    line: str


class Report(TypedDict):
    """One report about one attempt (`TaskEvent`); which fields come depends on its event."""

    task_id: str
    attempt_id: str
    event: EventKind
    progress: NotRequired[float]
    message: NotRequired[str | None]
    lines: NotRequired[list[LogLine]]
    result: NotRequired[Any]
    exit_code: NotRequired[int | None]
    error: NotRequired[str]
    reason: NotRequired[FailureReason]


class TaskUse(TypedDict):
    """What one running attempt holds, in a heartbeat (GPU fields only on a host with GPUs)."""

    task_id: str
    attempt_id: str
    pid: int | None
    gpus: list[int]
    gpu_memory_gb: NotRequired[float]
    gpu_utilization: NotRequired[float | None]


class Heartbeat(TypedDict):
    """An agent's heartbeat body (`coordinator.schemas.Heartbeat`)."""

    used_cpu: float
    cpu_percent: float
    used_memory_gb: float
    gpus: list[GpuUsage]
    current_tasks: list[str]
    tasks: list[TaskUse]
    problem: NotRequired[str | None]
