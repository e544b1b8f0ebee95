"""Schemas of the API's success answers, for the OpenAPI document (generated clients get typed models).

The handlers return plain dicts; these name the fields a client can rely on and allow more (`extra="allow"`),
so a field added to an answer never breaks a generated client.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Open(BaseModel):
    """An answer object whose listed fields are promised; others may come along."""

    model_config = ConfigDict(extra="allow")


class Resources(Open):
    """What a task asked for."""

    cpu: float
    memory_gb: float
    gpu: float
    gpu_memory_gb: float


class PendingReason(Open):
    """Why a pending task waits: a code and a sentence."""

    code: str
    message: str


class GpuTask(Open):
    """A running task holding a GPU: its id, name and attempt number."""

    task_id: uuid.UUID
    name: str = ""
    attempt: int = 0


class GpuView(Open):
    """One GPU of a worker: as registered, its latest reading (none while the worker is offline), the tasks
    holding it, and whether it is allocated, busy, and idle (`idle_s`: seconds below the busy threshold)."""

    index: int
    name: str = ""
    memory_gb: float = 0
    utilization: float | None = None
    memory_used_gb: float | None = None
    memory_total_gb: float | None = None
    temperature: float | None = None
    tasks: list[GpuTask] = []
    allocated: bool = False
    busy: bool = False
    idle: bool = False
    idle_s: float | None = None


class AttemptView(Open):
    """One attempt of a task."""

    id: uuid.UUID
    number: int
    worker_id: uuid.UUID | None = None
    leased_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    exit_code: int | None = None


class TaskView(Open):
    """One task (`attempt_history`, and `gpu_use`: the GPUs a running task holds, only when asked for one task)."""

    id: uuid.UUID
    service: str
    task_type: str
    name: str
    status: str
    priority: int
    group: str
    labels: list[str] = []
    input_params: dict[str, Any] = {}
    resources: Resources | None = None
    result: Any = None
    error: str | None = None
    end_reason: str | None = None
    progress: float | None = None
    attempts: int = 0
    retry_count: int = 0
    max_retries: int | None = None
    timeout_s: int | None = None
    batch_id: uuid.UUID | None = None
    worker_id: uuid.UUID | None = None
    worker_hostname: str | None = None
    attempt_id: uuid.UUID | None = None
    gpus: list[int] = []
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    pending_reason: PendingReason | None = None
    input_files: list[Any] = []
    outputs: list[Any] = []
    attempt_history: list[AttemptView] | None = None
    gpu_use: list[GpuView] | None = None


class Timeline(Open):
    """What happened to a task, oldest first."""

    task_id: uuid.UUID
    status: str
    events: list[dict[str, Any]]


class TaskPage(Open):
    """One page of a task list; `total` counts every match."""

    items: list[TaskView]
    total: int
    page: int
    page_size: int


class BatchSubmitted(Open):
    """A batch accepted: its id and its tasks' ids, in the order sent."""

    batch_id: uuid.UUID
    count: int
    ids: list[uuid.UUID]


class LogLineView(Open):
    """One stored log line."""

    id: int
    attempt_id: uuid.UUID | None = None
    ts: datetime | None = None
    stream: str
    line: str


class LogPage(Open):
    """Log lines; `next` is the `after` of the following call."""

    lines: list[LogLineView]
    next: int


class BulkOutcome(Open):
    """What a bulk action changed; tasks whose state did not allow it are skipped."""

    changed: int
    skipped: int
    ids: list[uuid.UUID]


class TaskCounts(Open):
    """Tasks by status, overall and per service."""

    total: int
    by_status: dict[str, int]
    by_service: dict[str, dict[str, int]]


class WorkerView(Open):
    """One worker: its record and live state."""

    id: uuid.UUID
    hostname: str
    status: str
    services: list[str] = []
    groups: list[str] = []
    cpu_cores: float = 0
    memory_gb: float = 0
    slots: int = 1
    running: int = 0
    metrics: dict[str, Any] = {}
    heartbeat_age_s: float | None = None
    last_heartbeat_at: datetime | None = None
    problem: str | None = None
    gpus: list[GpuView] = []


class WorkerList(Open):
    """Workers, newest registration first."""

    items: list[WorkerView]


class Registered(Open):
    """A host enrolled: its id (also as `worker_id`, the name older agents read) and its own token, shown once."""

    id: uuid.UUID
    worker_id: uuid.UUID
    token: str
    heartbeat_interval: float
    heartbeat_timeout: float


class HeartbeatAnswer(Open):
    """The worker's status, commands for it, and tasks it reported but no longer owns."""

    status: str
    commands: list[dict[str, Any]]
    stale_tasks: list[str]


class Leased(Open):
    """Tasks given to the worker, each with its attempt id (the fencing token) and GPUs."""

    tasks: list[dict[str, Any]]


class Deregistered(Open):
    """A worker gone offline, and how many of its tasks went back to the queue."""

    id: uuid.UUID
    status: str
    requeued: int


class ClusterTotals(Open):
    """Cores, memory and GPUs of the workers that are not offline, used and free."""

    workers: int
    by_status: dict[str, int]
    cpu_cores: float
    used_cpu: float = 0
    free_cpu: float
    memory_gb: float
    used_memory_gb: float = 0
    free_memory_gb: float = 0
    gpus: int
    allocated_gpus: int = 0
    busy_gpus: int = 0
    idle_gpus: int = 0
    slots: int
    running: int


class Removed(Open):
    """A worker deleted from the record."""

    id: uuid.UUID
    removed: bool


class Sent(Open):
    """How many workers a command was stored for."""

    sent: int


class Acked(Open):
    """How many commands were newly acknowledged."""

    acked: int


class BatchView(Open):
    """One batch with its progress: `failed` counts failed and timed-out tasks, `done_5m` those that finished in
    the last five minutes."""

    id: uuid.UUID
    name: str
    total: int
    created_at: datetime | None = None
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    pending: int = 0
    done_5m: int = 0


class BatchList(Open):
    """Batches, newest first."""

    items: list[BatchView]


class Items(Open):
    """A list answer."""

    items: list[dict[str, Any]]


class Health(Open):
    """Whether each store answers (`ok`, or `error: <kind>`), and whether this coordinator runs the timers."""

    status: str
    redis: str
    postgres: str
    leader: bool


class Probe(Open):
    """A liveness or readiness answer: `ok` (or `not ready`, naming each check), and the version."""

    status: str
    version: str


class WaitingCount(Open):
    """How many of a queue's pending tasks wait for one reason."""

    code: str
    message: str
    count: int


class QueueStats(Open):
    """One service's queue: pending and running now, the last hour's outcomes, the oldest wait (seconds), tasks
    finished per minute over the last 30 minutes (oldest first), and why its pending tasks wait."""

    service: str
    pending: int
    running: int
    succeeded_1h: int
    failed_1h: int
    oldest_pending_s: float | None = None
    throughput_per_min: list[int] = []
    waiting: list[WaitingCount] = []


class QueueList(Open):
    """Per-service queue figures, by service."""

    items: list[QueueStats]


class Retention(Open):
    """How many days finished tasks and files are kept (0: forever)."""

    task_days: float | None = None
    file_days: float | None = None


class Dashboard(Open):
    """Everything the dashboard shows in one call."""

    tasks: TaskCounts
    queues: list[QueueStats]
    workers: ClusterTotals
    counters: dict[str, int]
    retention: Retention | None = None


class TaskFiles(Open):
    """A task's inputs and each attempt's outputs, with download URLs valid for `expires_in_s`."""

    task_id: uuid.UUID
    expires_in_s: int
    inputs: list[dict[str, Any]]


class AttemptFiles(Open):
    """What an agent downloads before and uploads after running an attempt."""

    task_id: uuid.UUID
    attempt_id: uuid.UUID


class StoredFile(Open):
    """An output file stored."""

    name: str
    key: str
    size: int
    attempt: int


class ServiceView(Open):
    """A service as the scheduler treats it: `limit` is what applies (the operator's `max_running`, else the
    configured one; null: none); `at_limit`: its pending tasks wait for a running one to end."""

    name: str
    paused: bool
    limit: int | None
    running: int
    pending: int
    at_limit: bool
    max_running: int | None = None
    configured_limit: int | None = None
    number: int | None = None
    description: str = ""


class ServiceList(Open):
    """Services, by name."""

    items: list[ServiceView]


class ModelView(Open):
    """A service as the LLM scheduler showed a model: `id` its stable number, `max_workers` its running limit."""

    id: int
    name: str
    status: str
    max_workers: int | None
    description: str = ""
    running: int = 0
    pending: int = 0


class Submitted(Open):
    """The AIFlow gateway's answer to a submission."""

    task_id: uuid.UUID
    status: str
    created_at: datetime
    message: str


TEXT = {"text/plain": {"schema": {"type": "string"}}}
RESULTS = {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}
"""A batch's results table, streamed: JSON lines or CSV."""
"""Prometheus exposition text."""
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
"""A downloaded file."""
