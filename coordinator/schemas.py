"""Request bodies of the API, validated with pydantic; errors name the field path (422)."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from aiddwire import CommandKind, EndReason, EventKind, FailureReason
from coordinator.keys import PRIORITY_MAX, PRIORITY_MIN
from coordinator.states import RETRYABLE, ReasonCode, TaskStatus

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
"""Service, group, label and task-type names: they become parts of Redis keys."""
Text = Annotated[str, Field(max_length=500)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MAX_CORES = 10_000
"""Most CPU cores a worker registers with, and so most a task may ask for (slots are a PostgreSQL integer)."""
MAX_MEMORY_GB = 1_000_000.0
MAX_GPUS = 1024
"""GPU indices run from 0 to 1023."""


DEFAULT_RETRY_ON = tuple(sorted(RETRYABLE))
"""Sorted once: sorting the enum members for every submitted task showed in profiles."""


class Strict(BaseModel):
    """Unknown fields are refused, so a typo is a clear 422 rather than a silently ignored setting."""

    model_config = ConfigDict(extra="forbid")


class Resources(Strict):
    """What a task needs free on its worker."""

    cpu: Annotated[NonNegative, Field(le=MAX_CORES)] = 1.0
    memory_gb: Annotated[NonNegative, Field(le=MAX_MEMORY_GB)] = 0.0
    gpu: Annotated[NonNegative, Field(le=MAX_GPUS)] = 0.0
    """Whole GPUs (1, 2, ...) or a share of one GPU (0.25, 0.5)."""
    gpu_memory_gb: Annotated[NonNegative, Field(le=MAX_MEMORY_GB)] = 0.0

    @field_validator("gpu")
    @classmethod
    def _whole_or_share(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError("more than one GPU must be a whole number")
        return value


class TaskSpec(Strict):
    """One task as a client submits it; only `service` and `task_type` are required."""

    service: Name
    task_type: Name
    name: Text = ""
    input_params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=2, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    group: Name = "default"
    labels: list[Name] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    max_retries: int | None = Field(default=None, ge=0, le=100)
    timeout_s: int | None = Field(default=None, gt=0, le=30 * 86400)
    max_wait_s: int | None = Field(default=None, gt=0, le=30 * 86400)
    """Still pending this long after submission, the task ends as timeout (default: `task_max_wait`, none)."""
    retry_on: list[EndReason] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    input_files: list[Text] = Field(default_factory=list)
    outputs: list[Text] = Field(default_factory=list)
    exclusive: bool | None = None
    """Never run two attempts of it at once, even across a network partition: its agent stops it once cut off
    long enough for the coordinator to requeue it (default: the coordinator's `exclusive_tasks`)."""

    @field_validator("retry_on")
    @classmethod
    def _retryable(cls, value: list[EndReason]) -> list[EndReason]:
        wrong = [r.value for r in value if r not in RETRYABLE]
        if wrong:
            raise ValueError(f"can only retry on {sorted(RETRYABLE)}, not {wrong}")
        return value


class BatchSpec(Strict):
    """Several tasks accepted or refused together; `defaults` fill fields a task leaves out."""

    name: Text = ""
    batch_id: uuid.UUID | None = None
    """Add to an existing batch (a large batch sent in several requests)."""
    defaults: dict[str, Any] = {}
    tasks: list[dict[str, Any]] = Field(min_length=1)

    def specs(self) -> list[TaskSpec]:
        """Each task merged over the defaults and validated; errors say which task."""
        return [TaskSpec.model_validate({**self.defaults, **task}) for task in self.tasks]


class TaskList(RootModel[list[dict[str, Any]]]):
    """A batch sent as a bare list of tasks: the same as `{"tasks": [...]}`."""

    root: list[dict[str, Any]] = Field(min_length=1)


class TaskFilter(Strict):
    """Which tasks a list or a bulk action applies to."""

    status: list[TaskStatus] = []
    service: list[Name] = []
    group: list[Name] = []
    batch_id: uuid.UUID | None = None
    worker_id: uuid.UUID | None = None
    search: Annotated[str, Field(max_length=200)] = ""
    """Matched case-insensitively against the name, task type, id, status, service, group, parameters (as JSON)
    and the worker's hostname: what the console's Tasks table shows."""
    pending_reason: list[ReasonCode] = []
    """Pending tasks waiting for one of these reasons (see `coordinator.pending`)."""

    @property
    def empty(self) -> bool:
        """Whether the filter matches every task."""
        return self == TaskFilter()


class BulkAction(Strict):
    """A bulk cancel / retry / requeue: by ids, or by filter (an empty filter needs `all: true`)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"type": "object", "required": ["ids"],
         "properties": {"ids": {"type": "array", "items": {"type": "string", "format": "uuid"}}}},
        {"type": "object", "required": ["filter"]}]})

    ids: list[uuid.UUID] | None = Field(default=None, max_length=100_000)
    filter: TaskFilter | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one_selector(self) -> BulkAction:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or filter")
        if self.filter is not None and self.filter.empty and not self.all:
            raise ValueError("an empty filter matches every task: add \"all\": true to mean it")
        return self


class GpuInfo(BaseModel):
    """One GPU of a worker, as registered."""

    model_config = ConfigDict(extra="ignore")
    index: int = Field(ge=0, le=1023)
    name: str = ""
    uuid: str = ""
    memory_gb: NonNegative = 0.0


class WorkerRegistration(BaseModel):
    """What an agent says about its host. Only `hostname` is required (older agents send little more)."""

    model_config = ConfigDict(extra="ignore")
    hostname: Annotated[str, Field(min_length=1, max_length=255)]
    service: Name | None = None
    """Older agents name one service; merged into `services`."""
    services: list[Name] = []
    groups: list[Name] = []
    group: Name | None = None
    labels: list[Name] = []
    cpu_cores: Annotated[NonNegative, Field(le=MAX_CORES)] = 1.0
    """At most as many as `slots` may be: the default slots are the cores (a PostgreSQL integer)."""
    memory_gb: Annotated[NonNegative, Field(le=MAX_MEMORY_GB)] = 0.0
    gpus: list[GpuInfo] = []
    slots: int | None = Field(default=None, ge=1, le=10_000)
    agent_version: Annotated[str, Field(max_length=50)] = ""
    worker_id: uuid.UUID | None = None
    """The id this agent had before it restarted; with its `worker_token` it takes that identity back at once."""
    worker_token: Annotated[str, Field(max_length=200)] | None = None

    def all_services(self) -> list[str]:
        return sorted({*self.services, *([self.service] if self.service else [])})

    def all_groups(self) -> list[str]:
        return sorted({*self.groups, *([self.group] if self.group else [])}) or ["default"]


class GpuUsage(BaseModel):
    """One GPU's telemetry in a heartbeat (`aiddwire.GpuUsage`, with the API's limits)."""

    model_config = ConfigDict(extra="ignore")
    index: int = Field(ge=0, le=1023)
    utilization: NonNegative = 0.0
    memory_used_gb: NonNegative = 0.0
    memory_total_gb: NonNegative = 0.0
    temperature: float | None = None
    power_w: float | None = None


class Heartbeat(BaseModel):
    """Telemetry an agent sends every heartbeat_interval (`aiddwire.Heartbeat`); the older flat form is accepted as
    is."""

    model_config = ConfigDict(extra="ignore")
    used_cpu: NonNegative = 0.0
    cpu_percent: NonNegative | None = None
    used_memory_gb: NonNegative = 0.0
    used_gpu: NonNegative = 0.0
    used_gpu_memory_gb: NonNegative = 0.0
    gpus: list[GpuUsage] = []
    current_tasks: list[str] = Field(default=[], max_length=10_000)
    """Ids of the tasks (or attempts) the agent runs; ones it no longer owns come back in `stale_tasks`."""
    tasks: list[dict[str, Any]] = Field(default=[], max_length=10_000)
    """Per-task detail (task_id, attempt_id, gpu use) for the console."""
    problem: Annotated[str, Field(max_length=2000)] | None = None
    """What keeps the host from taking tasks (e.g. its work dir is full); it leases nothing meanwhile."""


class NodeHeartbeat(Heartbeat):
    """The Workers API's heartbeat: the node's own name in the body (`computer_001`), no id in the path."""

    worker_id: Name


class LeaseRequest(Strict):
    """An agent's ask for work, stating what it has free now."""

    max_tasks: int = Field(default=1, ge=0, le=1000)
    wait_s: float = Field(default=0.0, ge=0, le=300)
    cpu: NonNegative | None = None
    memory_gb: NonNegative | None = None
    gpus: list[dict[str, float]] | None = None
    """Per GPU: {index, free (0..1), memory_gb}; absent: the registered GPUs less what running tasks hold."""

    @field_validator("gpus")
    @classmethod
    def _gpu_fields(cls, value: list[dict[str, float]] | None) -> list[dict[str, float]] | None:
        for gpu in value or []:
            if "index" not in gpu or any(not isinstance(v, int | float) or math.isnan(v) for v in gpu.values()):
                raise ValueError("each GPU needs a numeric index, free and memory_gb")
            if not (float(gpu["index"]).is_integer() and 0 <= gpu["index"] <= 1023):
                raise ValueError("a GPU index is a whole number from 0 to 1023")
            if any(v < 0 or math.isinf(v) for v in gpu.values()):
                raise ValueError("free and memory_gb must be finite and not negative")
        return value


def dropped_note(count: int) -> str:
    """The marker's text: `… 660 000 lines dropped …` (the thousands spaced, as SI writes them)."""
    return f"… {count:,} line{'' if count == 1 else 's'} dropped …".replace(",", " ")


class LogLine(Strict):
    """One output line of a task attempt."""

    stream: Literal["stdout", "stderr"] = "stdout"
    line: str
    ts: float | None = None


class TaskEvent(Strict):
    """One report from an agent about one attempt (`aiddwire.Report`); `attempt_id` is the fencing token."""

    task_id: uuid.UUID
    attempt_id: uuid.UUID
    event: EventKind
    progress: float | None = Field(default=None, ge=0, le=1)
    message: Annotated[str, Field(max_length=2000)] | None = None
    lines: list[LogLine] = Field(default_factory=list, max_length=10_000)
    """Output lines (a factory, not `[]`: pydantic deep-copies a list default, a cost on each of many events)."""
    result: Any = None
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    error: Annotated[str, Field(max_length=20_000)] | None = None
    reason: FailureReason = "error"
    """Why a failed attempt failed: a non-zero exit (error), bad input (permanent), or its timeout."""


class ReportBatch(Strict):
    """Several events in one request (agents batch them to keep round trips low)."""

    events: list[TaskEvent] = Field(min_length=1, max_length=5000)


class WorkerCommandSpec(Strict):
    """A command for one worker or all of them."""

    command: CommandKind
    args: dict[str, Any] = {}
    group: Name | None = None
    """Broadcast only: limit to the workers of this group."""


class CommandAck(Strict):
    """Commands an agent has carried out."""

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(min_length=1, max_length=1000)
    """Command ids (PostgreSQL bigints)."""


class ServiceChange(Strict):
    """What an operator changes about a service; fields left out stay as they are."""

    paused: bool | None = None
    """True: its pending tasks wait (none is claimed) until resumed."""
    max_running: int | None = Field(default=None, ge=0, le=1_000_000)
    """Most of its tasks running at once; null: the configured `service_limits` (else no limit)."""
    description: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> ServiceChange:
        if not self.model_fields_set:
            raise ValueError("give paused, max_running or description")
        if self.paused is None and "paused" in self.model_fields_set:
            raise ValueError("paused: must be true or false")
        if self.description is None and "description" in self.model_fields_set:
            raise ValueError("description: must be text")
        return self
