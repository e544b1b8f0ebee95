"""Typed views of the API's answers, as `CoordinatorClient` hands them to the console.

Each view is built once from an answer's JSON (`from_json`) and read by attribute, so a misspelt field is a
mypy error rather than a silent `None`, and each field's default (what a missing or null field reads as) is
stated once, here. The field names are those of the answer schemas (`coordinator.api.answers`); a test
checks that every view field is one of its schema's fields, so the two cannot drift apart. Stdlib only: the
CLI and the console import this without pydantic's cost. Timestamps stay ISO text (`console.text` parses
the few it shows), ids stay text (the console keys its tables by them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Self

EMPTY: Mapping[str, Any] = MappingProxyType({})
"""The default of a JSON-object field: shared, and read-only so that sharing it is safe."""


def _empty() -> Mapping[str, Any]:
    return EMPTY


def _no_object() -> Any:
    """The default of a field holding a JSON object, EMPTY (a dataclass takes only hashable plain defaults)."""
    return field(default_factory=_empty)


Convert = Callable[[Any], Any]


def _tuple(item: Convert | None = None) -> Convert:
    """A JSON list as a tuple, each item converted (views are immutable)."""
    if item is None:
        return tuple
    return lambda values: tuple(map(item, values))


def field_default(spec: Field[Any]) -> Any:
    """A field's default (MISSING: none); factories give shared immutable values, so one call does."""
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default


def _reader(cls: type[View]) -> Callable[[Mapping[str, Any]], Any]:
    """`cls.from_json`, written out for its fields as `dataclasses` writes `__init__` (a loop over the fields
    costs half as much again, and the Workers pane builds some 2 500 views a refresh).

    For field i: `vi = get(name)`; a missing or null value becomes its default `di` (or raises KeyError when
    it has none), a present one goes through its converter `ci`, if any.
    """
    specs = fields(cls)  # type: ignore[arg-type]
    scope: dict[str, Any] = {"cls": cls}
    lines = ["def from_json(data):", " get = data.get"]
    for i, spec in enumerate(specs):
        scope[f"d{i}"], scope[f"c{i}"] = field_default(spec), cls.CONVERT.get(spec.name)
        value = f"c{i}(v{i})" if scope[f"c{i}"] is not None else f"v{i}"
        lines.append(f" v{i} = get({spec.name!r})")
        if scope[f"d{i}"] is MISSING:
            lines += [f" if v{i} is None: raise KeyError({spec.name!r})", f" v{i} = {value}"]
        else:
            lines.append(f" v{i} = d{i} if v{i} is None else {value}")
    lines.append(f" return cls({', '.join(f'v{i}' for i in range(len(specs)))})")
    exec("\n".join(lines), scope)  # the code is made above from field names only
    return scope["from_json"]  # type: ignore[no-any-return]


class View:
    """Building a view from JSON: each field's value, or its default when the answer has none (or null)."""

    __slots__ = ()
    CONVERT: ClassVar[Mapping[str, Convert]] = EMPTY
    """Fields whose JSON value is turned into something else (a nested view, a tuple)."""
    _readers: ClassVar[dict[type, Callable[[Mapping[str, Any]], Any]]] = {}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The view of one answer object (a missing field without a default raises KeyError)."""
        reader = View._readers.get(cls)
        if reader is None:
            reader = View._readers[cls] = _reader(cls)
        return reader(data)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Resources(View):
    """What a task asked for."""

    cpu: float = 0.0
    memory_gb: float = 0.0
    gpu: float = 0.0
    gpu_memory_gb: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingReason(View):
    """Why a pending task waits: a code (`no_worker`, `service_paused`, ...) and a sentence."""

    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class GpuTask(View):
    """A running task holding a GPU."""

    task_id: str
    name: str = ""
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class GpuView(View):
    """One GPU of a worker: what it is, its latest reading, the tasks holding it, and whether it is allocated,
    busy, or idle (allocated but below the busy threshold for `idle_s` seconds)."""

    CONVERT: ClassVar[Mapping[str, Convert]] = {"tasks": _tuple(GpuTask.from_json)}

    index: int
    name: str = ""
    memory_gb: float = 0.0
    utilization: float = 0.0
    memory_used_gb: float = 0.0
    memory_total_gb: float = 0.0
    temperature: float | None = None
    tasks: tuple[GpuTask, ...] = ()
    allocated: bool = False
    busy: bool = False
    idle: bool = False
    idle_s: float | None = None

    @property
    def memory(self) -> float:
        """Its memory in GB: the reading's total, else the size it registered with."""
        return self.memory_total_gb or self.memory_gb


@dataclass(frozen=True, slots=True)
class AttemptView(View):
    """One attempt of a task (in a single task's `attempt_history`)."""

    id: str
    number: int = 0
    worker_id: str | None = None
    leased_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    end_reason: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class TaskView(View):
    """One task. `attempt_history` and `gpu_use` (the GPUs a running task holds) come only with a single task."""

    CONVERT: ClassVar[Mapping[str, Convert]] = {
        "labels": _tuple(), "gpus": _tuple(), "resources": Resources.from_json,
        "pending_reason": PendingReason.from_json, "attempt_history": _tuple(AttemptView.from_json),
        "gpu_use": _tuple(GpuView.from_json), "input_files": _tuple(), "outputs": _tuple()}

    id: str
    status: str
    service: str = ""
    task_type: str = ""
    name: str = ""
    priority: int = 2
    group: str = "default"
    labels: tuple[str, ...] = ()
    input_params: Mapping[str, Any] = _no_object()
    resources: Resources = Resources()
    result: Any = None
    error: str | None = None
    end_reason: str | None = None
    progress: float | None = None
    attempts: int = 0
    retry_count: int = 0
    max_retries: int = 0
    timeout_s: int | None = None
    batch_id: str | None = None
    worker_id: str | None = None
    worker_hostname: str | None = None
    attempt_id: str | None = None
    gpus: tuple[int, ...] = ()
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    pending_reason: PendingReason | None = None
    input_files: tuple[Any, ...] = ()
    outputs: tuple[Any, ...] = ()
    attempt_history: tuple[AttemptView, ...] = ()
    gpu_use: tuple[GpuView, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskPage(View):
    """One page of a task list; `total` counts every match."""

    CONVERT: ClassVar[Mapping[str, Convert]] = {"items": _tuple(TaskView.from_json)}

    items: tuple[TaskView, ...] = ()
    total: int = 0
    page: int = 1
    page_size: int = 0


@dataclass(frozen=True, slots=True)
class WorkerView(View):
    """One worker: its record and live state. `problem` is what stops a live worker taking tasks, as its agent
    said; `gpus` carry their latest readings (an offline worker's: the last it sent, see `from_json`)."""

    CONVERT: ClassVar[Mapping[str, Convert]] = {"services": _tuple(), "groups": _tuple(),
                                                "gpus": _tuple(GpuView.from_json)}

    id: str
    status: str
    hostname: str = ""
    services: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    cpu_cores: float = 0.0
    memory_gb: float = 0.0
    slots: int = 1
    running: int = 0
    metrics: Mapping[str, Any] = _no_object()
    heartbeat_age_s: float | None = None
    last_heartbeat_at: str | None = None
    problem: str | None = None
    gpus: tuple[GpuView, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The worker, each GPU with the readings of its last heartbeat merged in: the API leaves them out for
        an offline worker (they are not live), the console still shows them, dimmed."""
        readings = (data.get("metrics") or EMPTY).get("gpus")
        if readings and data.get("gpus"):
            live = {g.get("index"): g for g in readings}
            data = {**data, "gpus": [{**g, **live.get(g.get("index"), EMPTY)} for g in data["gpus"]]}
        return super(WorkerView, cls).from_json(data)

    @property
    def offline(self) -> bool:
        """Whether it has stopped (its readings are its last ones, not live)."""
        return self.status == "offline"

    @property
    def cpu_fraction(self) -> float:
        """CPU in use, 0..1: the agent's percentage, else used cores over cores."""
        percent = self.metrics.get("cpu_percent")
        if percent is not None:
            return float(percent) / 100
        return float(self.metrics.get("used_cpu") or 0) / self.cpu_cores if self.cpu_cores else 0.0

    @property
    def used_memory_gb(self) -> float:
        """Memory in use, as its last heartbeat said."""
        return float(self.metrics.get("used_memory_gb") or 0)


@dataclass(frozen=True, slots=True)
class BatchView(View):
    """One batch with its progress: `failed` counts failed and timed-out tasks, `done_5m` the tasks finished in
    the last five minutes."""

    id: str
    name: str = ""
    total: int = 0
    created_at: str | None = None
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    pending: int = 0
    done_5m: int = 0


@dataclass(frozen=True, slots=True)
class WaitingCount(View):
    """How many of a queue's pending tasks wait for one reason."""

    code: str = ""
    message: str = ""
    count: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats(View):
    """One service's queue: pending and running now, the last hour's outcomes, the oldest wait, finished tasks
    per minute over the last 30 minutes (oldest first), and why its pending tasks wait (commonest first)."""

    CONVERT: ClassVar[Mapping[str, Convert]] = {"throughput_per_min": _tuple(),
                                                "waiting": _tuple(WaitingCount.from_json)}

    service: str
    pending: int = 0
    running: int = 0
    succeeded_1h: int = 0
    failed_1h: int = 0
    oldest_pending_s: float | None = None
    throughput_per_min: tuple[int, ...] = ()
    waiting: tuple[WaitingCount, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceView(View):
    """A service as the scheduler treats it: `limit` is the running limit that applies (None: none), `at_limit`
    says its pending tasks wait for a running one to end; `max_running` is the operator's own limit."""

    name: str
    paused: bool = False
    limit: int | None = None
    running: int = 0
    pending: int = 0
    at_limit: bool = False
    max_running: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterTotals(View):
    """Workers by status, and the cores, memory, GPUs and slots of those not offline, used and in all."""

    by_status: Mapping[str, int] = _no_object()
    cpu_cores: float = 0.0
    used_cpu: float = 0.0
    memory_gb: float = 0.0
    used_memory_gb: float = 0.0
    gpus: int = 0
    allocated_gpus: int = 0
    busy_gpus: int = 0
    idle_gpus: int = 0
    slots: int = 0
    running: int = 0

    @property
    def gpu_counts(self) -> dict[str, int]:
        """The GPU totals alone, keyed as `coordinator.gpus.count_gpus` keys them (the top bar shows them)."""
        return {"gpus": self.gpus, "allocated_gpus": self.allocated_gpus, "busy_gpus": self.busy_gpus,
                "idle_gpus": self.idle_gpus}


@dataclass(frozen=True, slots=True)
class TaskCounts(View):
    """Tasks by status."""

    total: int = 0
    by_status: Mapping[str, int] = _no_object()


@dataclass(frozen=True, slots=True)
class Retention(View):
    """How many days finished tasks are kept (0: forever)."""

    task_days: float | None = None


@dataclass(frozen=True, slots=True)
class Dashboard(View):
    """What the Queues pane shows, in one answer (`retention` is missing from an older coordinator's)."""

    CONVERT: ClassVar[Mapping[str, Convert]] = {
        "tasks": TaskCounts.from_json, "queues": _tuple(QueueStats.from_json), "workers": ClusterTotals.from_json,
        "retention": Retention.from_json}

    tasks: TaskCounts = TaskCounts()
    queues: tuple[QueueStats, ...] = ()
    workers: ClusterTotals = ClusterTotals()
    retention: Retention | None = None
