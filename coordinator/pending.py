"""Why pending tasks wait: one reason per queue shape (service, group, labels, resources), a few per task.

Slurm's REASON column in plain words. What depends on the workers is decided once per queue shape from one
snapshot of the workers (taken at most once per `SNAPSHOT_TTL_S`), so listing 100 000 pending tasks costs a
dictionary lookup per task; what depends on the task alone (an old attempt stopping, a retry backoff, its place
in the queue) comes from its own row and one round trip to Redis per page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, and_, between, cast, false, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import SQLAlchemyError

from coordinator.core import Core, utcnow
from coordinator.gpus import holds
from coordinator.keys import SEQ_SPAN
from coordinator.models import Task, Worker
from coordinator.queue import as_str, queue_needs
from coordinator.services import ServiceRegistry, ServiceState
from coordinator.states import ReasonCode, TaskStatus, WorkerStatus

log = logging.getLogger(__name__)
SNAPSHOT_TTL_S = 1.0
"""How long one snapshot of the workers and queues answers for every task (a task list of 100 000 computes once)."""


SHAPE_CODES = frozenset({ReasonCode.PAUSED, ReasonCode.SERVICE_LIMIT, ReasonCode.NO_GROUP, ReasonCode.NO_SERVICE,
                         ReasonCode.NO_LABELS, ReasonCode.TOO_BIG,
                         ReasonCode.BUSY, ReasonCode.READY})
"""The codes decided per queue shape (the rest come from the task's own row or its place in the queue)."""


@dataclass(frozen=True)
class PendingReason:
    """A reason a task waits: a code for machines and a sentence for people."""

    code: ReasonCode
    message: str

    def view(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


@dataclass(frozen=True)
class Shape:
    """What decides which workers can run a task: its service, group, labels and resources."""

    service: str
    group: str
    labels: tuple[str, ...] = ()
    cpu: float = 1.0
    memory_gb: float = 0.0
    gpu: float = 0.0
    gpu_memory_gb: float = 0.0

    @classmethod
    def of_task(cls, row: Any) -> Shape:
        return cls(row.service, row.group, tuple(sorted(set(row.labels or ()))), row.cpu, row.memory_gb, row.gpu,
                   row.gpu_memory_gb)

    @classmethod
    def of_queue(cls, service: str, group: str, needs: str) -> Shape:
        """The shape a queue's `needs` spell (see `queue.queue_needs`: labels, then `*cpu=4`, `*mem=16`...)."""
        labels: list[str] = []
        amounts = {"cpu": 1.0, "mem": 0.0, "gpu": 0.0, "gmem": 0.0}
        for need in filter(None, needs.split("+")):
            name, _, amount = need.partition("=")
            if name.startswith("*") and name[1:] in amounts:
                amounts[name[1:]] = float(amount) if amount else 1.0
            else:
                labels.append(need)
        return cls(service, group, tuple(labels), amounts["cpu"], amounts["mem"], amounts["gpu"], amounts["gmem"])

    @property
    def needs(self) -> str:
        return queue_needs(self.labels, self.cpu, self.memory_gb, self.gpu, self.gpu_memory_gb)

    def condition(self) -> ColumnElement[bool]:
        """SQL: tasks of this shape (amounts within the rounding of queue keys)."""
        def near(column: Any, value: float) -> ColumnElement[bool]:
            return between(column, value - 1e-6, value + 1e-6)
        return and_(Task.service == self.service, Task.group == self.group,
                    Task.labels == cast(list(self.labels), JSONB), near(Task.cpu, self.cpu),
                    near(Task.memory_gb, self.memory_gb), near(Task.gpu, self.gpu),
                    near(Task.gpu_memory_gb, self.gpu_memory_gb))


@dataclass(frozen=True)
class Registration:
    """What a worker said it is when it registered. Only a registration changes it, and each one issues a new
    token: a snapshot reads these columns again only for workers whose token hash it has not seen."""

    services: frozenset[str]
    groups: frozenset[str]
    labels: frozenset[str]
    cores: float
    memory_gb: float
    gpu_memory: tuple[float, ...]
    """Each GPU's memory (GB; inf when unknown)."""
    gpu_index: dict[int, int]
    """NVML index -> position in the GPU lists (tasks name GPUs by index)."""
    slots: int

    @classmethod
    def of_row(cls, row: Any) -> Registration:
        gpus = row.gpus or []
        return cls(frozenset(row.services or ()), frozenset(row.groups), frozenset(row.labels), float(row.cpu_cores),
                   float(row.memory_gb or 0.0), tuple(float(g.get("memory_gb") or math.inf) for g in gpus),
                   {int(g.get("index", i)): i for i, g in enumerate(gpus)}, int(row.slots))


@dataclass
class WorkerRoom:
    """One worker that is not offline: what it registered as, and what its running tasks leave free."""

    status: str
    registered: Registration
    problem: str | None = None
    """What stops it running tasks (its work dir gone, read-only, full), as its heartbeats say."""
    running: int = 0
    used_cpu: float = 0.0
    used_memory_gb: float = 0.0
    gpu_free: list[float] = field(default_factory=list)
    """Each GPU's share left (1.0: whole)."""
    gpu_memory_free: list[float] = field(default_factory=list)

    @classmethod
    def idle(cls, status: str, registered: Registration, problem: str | None) -> WorkerRoom:
        """The worker before its running tasks are counted in."""
        return cls(status, registered, problem, gpu_free=[1.0] * len(registered.gpu_memory),
                   gpu_memory_free=list(registered.gpu_memory))

    def serves(self, shape: Shape) -> bool:
        reg = self.registered
        return shape.group in reg.groups and (not reg.services or shape.service in reg.services)

    def short_of(self, shape: Shape, free: bool) -> list[str]:
        """The resources it lacks for one task of `shape` (when empty, or, with `free`, with what is free now)."""
        reg = self.registered
        cores = reg.cores - (self.used_cpu if free else 0.0)
        memory = reg.memory_gb - (self.used_memory_gb if free else 0.0)
        shares = self.gpu_free if free else [1.0] * len(reg.gpu_memory)
        gpu_mem = self.gpu_memory_free if free else reg.gpu_memory
        lacking = []
        if shape.cpu > cores + 1e-9:
            lacking.append("cores")
        if shape.memory_gb > 0 and reg.memory_gb > 0 and shape.memory_gb > memory + 1e-9:
            lacking.append("memory")
        if shape.gpu > 0 or shape.gpu_memory_gb > 0:
            whole = shape.gpu >= 1
            enough = [s >= 1 if whole else s >= shape.gpu and s > 0 for s in shares]
            if sum(enough) < (math.ceil(shape.gpu) if whole else 1):
                lacking.append("GPUs")
            elif shape.gpu_memory_gb > 0:
                roomy = sum(1 for ok, m in zip(enough, gpu_mem, strict=True) if ok and m + 1e-9 >= shape.gpu_memory_gb)
                if roomy < max(1, math.ceil(shape.gpu)):
                    lacking.append("GPU memory")
        if free and self.running >= reg.slots:
            lacking.append("slots")
        return lacking


@dataclass
class Snapshot:
    """The workers as they were at `taken` (monotonic seconds), and the reasons decided from them."""

    taken: float
    workers: list[WorkerRoom]
    offline_groups: dict[str, int]
    """Offline workers per group (said when no online one is left)."""
    services: dict[str, ServiceState] = field(default_factory=dict)
    """The service registry's rules: which services are paused, limited, and how many of their tasks run."""
    decided: dict[Shape, PendingReason] = field(default_factory=dict)


WORKER_STATES = select(Worker.id, Worker.token_hash, Worker.status, Worker.metrics["problem"].astext.label("problem"))
"""Every worker's registration (by its token hash), stored status and the problem its last heartbeat named."""
REGISTRATIONS = select(Worker.id, Worker.token_hash, Worker.services, Worker.groups, Worker.labels, Worker.cpu_cores,
                       Worker.memory_gb, Worker.gpus, Worker.slots)
RUNNING = Task.status == TaskStatus.RUNNING.value
USED = select(Task.worker_id, func.count().label("running"), func.sum(Task.cpu).label("cpu"),
              func.sum(Task.memory_gb).label("memory_gb")).where(RUNNING).group_by(Task.worker_id)
"""What the running tasks use, per worker (PostgreSQL adds it up: a row per worker, not per task)."""
ON_GPUS = select(Task.worker_id, Task.gpu, Task.gpu_memory_gb, Task.gpus).where(RUNNING, Task.gpus != cast([], JSONB))


def _amount(value: float) -> str:
    return f"{value:g}"


def _needs_phrase(shape: Shape, lacking: Iterable[str]) -> str:
    """What the task asks for, for the resources named (e.g. `2 GPUs, 64 GB memory`)."""
    words = {"cores": f"{_amount(shape.cpu)} cores", "memory": f"{_amount(shape.memory_gb)} GB memory",
             "GPUs": f"{_amount(shape.gpu)} GPU{'' if shape.gpu == 1 else 's'}",
             "GPU memory": f"{_amount(shape.gpu_memory_gb)} GB GPU memory"}
    return ", ".join(words[name] for name in lacking)


def decide(shape: Shape, snap: Snapshot) -> PendingReason:
    """Why tasks of `shape` wait, given the workers of `snap`: the first of its service paused or at its running
    limit, no worker in the group, none serving
    the service, none with the labels, none big enough, all fitting ones busy or draining; or one has room."""
    rule = snap.services.get(shape.service)
    if rule is not None and rule.paused:
        return PendingReason(ReasonCode.PAUSED, f"service `{shape.service}` is paused")
    if rule is not None and rule.at_limit:
        return PendingReason(ReasonCode.SERVICE_LIMIT, f"service `{shape.service}` runs {rule.running} "
                             f"task{'' if rule.running == 1 else 's'}, its limit")
    in_group = [w for w in snap.workers if shape.group in w.registered.groups]
    if not in_group:
        offline = snap.offline_groups.get(shape.group, 0)
        return PendingReason(ReasonCode.NO_GROUP, f"no online worker in group `{shape.group}`"
                             + (f" ({offline} offline)" if offline else ""))
    serving = [w for w in in_group if w.serves(shape)]
    if not serving:
        return PendingReason(ReasonCode.NO_SERVICE,
                             f"no online worker in group `{shape.group}` serves `{shape.service}`")
    labelled = [w for w in serving if w.registered.labels.issuperset(shape.labels)]
    if not labelled:
        missing = sorted(set(shape.labels) - set().union(*(w.registered.labels for w in serving)))
        named = ", ".join(f"`{label}`" for label in (missing or shape.labels))
        return PendingReason(ReasonCode.NO_LABELS, f"no worker in group `{shape.group}` serving `{shape.service}` "
                             f"has the label{'s' if len(missing or shape.labels) > 1 else ''} {named}")
    shortfalls = [w.short_of(shape, free=False) for w in labelled]
    fitting = [w for w, short in zip(labelled, shortfalls, strict=True) if not short]
    if not fitting:
        each = [name for name in ("cores", "memory", "GPUs", "GPU memory") if all(name in s for s in shortfalls)]
        if each:
            return PendingReason(ReasonCode.TOO_BIG, f"no worker is big enough: none has {_needs_phrase(shape, each)}")
        asked = [name for name in ("cores", "memory", "GPUs", "GPU memory") if any(name in s for s in shortfalls)]
        return PendingReason(ReasonCode.TOO_BIG,
                             f"no worker is big enough: none has {_needs_phrase(shape, asked)} together")
    online = [w for w in fitting if w.status == WorkerStatus.ONLINE]
    if any(not w.short_of(shape, free=True) and not w.problem for w in online):
        return PendingReason(ReasonCode.READY, "starts at the next lease of a worker with room")
    troubled = [w.problem for w in online if w.problem]
    if troubled and len(troubled) == len(fitting):
        n = len(troubled)
        return PendingReason(ReasonCode.BUSY, f"{'the' if n == 1 else 'all'} {n} fitting worker{'' if n == 1 else 's'} "
                             f"cannot run tasks: {troubled[0]}")
    n = len(fitting)
    workers = f"{n} fitting worker{'' if n == 1 else 's'}"
    if not online:
        state = "is draining" if n == 1 else "are draining"
    else:
        state = ("is busy" if n == 1 else "are busy") if len(online) == n else "are busy or draining"
    return PendingReason(ReasonCode.BUSY, f"{'the' if n == 1 else 'all'} {workers} {state}")


def own_reason(row: Any, now: datetime) -> PendingReason | None:
    """What a pending task's own record says (an old attempt still stopping, a retry backoff), else None."""
    if row.stopping_attempt_id is not None:
        return PendingReason(ReasonCode.STOPPING, "waiting for the old attempt to stop")
    if row.available_at is not None and row.available_at > now:
        return PendingReason(ReasonCode.BACKOFF,
                             f"retry backoff until {row.available_at.isoformat(timespec='seconds')}")
    return None


class PendingReasons:
    """Reasons for pending tasks, over a snapshot of workers and queues refreshed at most once a second."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._snapshot: Snapshot | None = None
        self._taking: asyncio.Future[Snapshot] | None = None
        """The take under way, shared by every caller that waits for it."""
        self._registered: dict[Any, tuple[str, Registration]] = {}
        """Worker id -> the token hash of its registration and what that registration said."""

    async def snapshot(self, fresh: bool = False) -> Snapshot:
        """A snapshot at most SNAPSHOT_TTL_S old. For requests (not `fresh`), an older one is still answered while
        the next is taken in the background: no request waits for a take (~10 ms of the loop for 500 workers; it
        fell on one task submission a second, between the submission and its lease) except the very first.
        `fresh`: wait for a new one rather (the leader's history writes what it decides from it)."""
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.taken <= SNAPSHOT_TTL_S:
            return snap
        if self._taking is None:  # one take at a time, whoever asks
            self._taking = asyncio.ensure_future(self._take_next())
            self._taking.add_done_callback(self._taken)
        if snap is not None and not fresh:
            return snap
        return await asyncio.shield(self._taking)

    async def _take_next(self) -> Snapshot:
        """Take the next snapshot; when a store is away, drop the old one, so the next caller waits for a take
        and sees the failure (the tasks are then shown without reasons) rather than reasons of a past look."""
        try:
            self._snapshot = await self._take()
        except BaseException:
            self._snapshot = None
            raise
        return self._snapshot

    def _taken(self, taking: asyncio.Future[Snapshot]) -> None:
        """The take is over. Its failure, read here so none is left unretrieved, is for the next caller to see
        (and log): with the old snapshot gone, that caller waits for a take of its own."""
        self._taking = None
        if not taking.cancelled():
            taking.exception()

    async def close(self) -> None:
        """Stop a snapshot being taken in the background (the coordinator is stopping)."""
        if self._taking is not None:
            self._taking.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, SQLAlchemyError, OSError):
                await self._taking

    async def _take(self) -> Snapshot:
        """Read the workers and their running tasks. The leader takes one a second for the reasons' history, so
        it reads what changes (statuses, problems, what running tasks use) and keeps what only a registration
        changes."""
        async with self.core.engine.connect() as conn:
            states = (await conn.execute(WORKER_STATES)).all()
            unseen = [row.id for row in states if self._registered.get(row.id, ("",))[0] != row.token_hash]
            if unseen:
                for row in await conn.execute(REGISTRATIONS.where(Worker.id.in_(unseen))):
                    self._registered[row.id] = (row.token_hash, Registration.of_row(row))
            used = (await conn.execute(USED)).all()
            on_gpus = (await conn.execute(ON_GPUS)).all()
        live = await self.core.index.worker_statuses([str(row.id) for row in states])
        if len(self._registered) > len(states):  # workers were removed
            self._registered = {row.id: self._registered[row.id] for row in states if row.id in self._registered}
        workers: dict[Any, WorkerRoom] = {}
        offline: dict[str, int] = {}
        for row, live_status in zip(states, live, strict=True):
            if row.id not in self._registered:  # removed between the two reads
                continue
            registered, status = self._registered[row.id][1], live_status or row.status
            if status == WorkerStatus.OFFLINE:
                for group in registered.groups:
                    offline[group] = offline.get(group, 0) + 1
                continue
            workers[row.id] = WorkerRoom.idle(status, registered, row.problem)
        for row in used:
            room = workers.get(row.worker_id)
            if room is not None:
                room.running, room.used_cpu, room.used_memory_gb = row.running, row.cpu, row.memory_gb
        on_workers: dict[Any, list[Any]] = {}
        for task in on_gpus:
            if task.worker_id in workers:
                on_workers.setdefault(task.worker_id, []).append(task)
        for worker_id, tasks in on_workers.items():  # held as the leases count it (`gpus.holds`)
            room = workers[worker_id]
            for index, hold in holds(tasks).items():
                at = room.registered.gpu_index.get(index)
                if at is not None:
                    room.gpu_free[at] = max(0.0, 1.0 - hold.share)
                    room.gpu_memory_free[at] = max(0.0, room.registered.gpu_memory[at] - hold.memory_gb)
        services = {s.name: s for s in await ServiceRegistry(self.core).rules()}
        return Snapshot(time.monotonic(), list(workers.values()), offline, services=services)

    async def queues(self) -> dict[str, tuple[Shape, int]]:
        """Every queue that holds tasks: key -> its shape and size. Read afresh each time (the index's registry, a
        few keys per group), so a queue opened a moment ago is not missed."""
        groups = [as_str(g) for g in await self.core.redis.smembers(self.core.keys.queue_groups)]
        async with self.core.redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.hgetall(self.core.keys.queues(group))
            registries = await pipe.execute()
        shapes: dict[str, Shape] = {}
        for group, registry in zip(groups, registries, strict=True):
            for key, value in registry.items():
                service, _, needs = as_str(value).partition("\t")
                shapes[as_str(key)] = Shape.of_queue(service, group, needs)
        async with self.core.redis.pipeline(transaction=False) as pipe:
            for key in shapes:
                pipe.zcard(key)
            sizes = await pipe.execute()
        return {key: (shape, int(size)) for (key, shape), size in zip(shapes.items(), sizes, strict=True) if size}

    @staticmethod
    def of_shape(snap: Snapshot, shape: Shape) -> PendingReason:
        """The shape's reason in this snapshot (decided once per snapshot)."""
        reason = snap.decided.get(shape)
        if reason is None:
            reason = snap.decided[shape] = decide(shape, snap)
        return reason

    async def for_tasks(self, rows: Sequence[Any]) -> list[PendingReason | None]:
        """The reason of each task row (None for tasks that are not pending). Busy tasks with tasks of higher
        priority ahead of them in their group's queues say how many (one Redis round trip for all rows)."""
        now = utcnow()
        pending = [row.status == TaskStatus.PENDING for row in rows]
        reasons = [own_reason(row, now) if waits else None for row, waits in zip(rows, pending, strict=True)]
        queued = [i for i, r in enumerate(reasons) if r is None and pending[i]]
        if not queued:
            return reasons
        try:
            snap = await self.snapshot()
            for i in queued:
                reasons[i] = self.of_shape(snap, Shape.of_task(rows[i]))
            await self._count_ahead(rows, reasons)
        except (RedisError, SQLAlchemyError, OSError) as exc:  # a store is away: the tasks show without them
            log.warning("pending reasons unavailable (%s: %s)", type(exc).__name__, exc)
        return reasons

    async def _count_ahead(self, rows: Sequence[Any], reasons: list[PendingReason | None]) -> None:
        """Turn `busy` into `priority` where tasks of higher priority wait in the queues of the task's group."""
        asks = sorted({(row.group, row.priority) for row, r in zip(rows, reasons, strict=True)
                       if r is not None and r.code == ReasonCode.BUSY})
        if not asks:
            return
        by_group: dict[str, list[str]] = {}
        for key, (shape, _size) in (await self.queues()).items():
            by_group.setdefault(shape.group, []).append(key)
        async with self.core.redis.pipeline(transaction=False) as pipe:
            for group, priority in asks:
                for key in by_group.get(group, []):
                    pipe.zcount(key, "-inf", f"({-priority * SEQ_SPAN}")
            counts = iter(await pipe.execute())
        ahead = {(group, priority): sum(int(next(counts)) for _ in by_group.get(group, []))
                 for group, priority in asks}
        for i, (row, reason) in enumerate(zip(rows, reasons, strict=True)):
            n = ahead.get((row.group, row.priority), 0) if reason is not None and reason.code == ReasonCode.BUSY else 0
            if n and reason is not None:
                reasons[i] = PendingReason(ReasonCode.PRIORITY, f"{n} task{'s' if n > 1 else ''} of higher priority "
                                                                f"{'are' if n > 1 else 'is'} ahead; {reason.message}")

    async def by_service(self) -> dict[str, list[dict[str, Any]]]:
        """Per service, its queued tasks by reason, most first: [{code, message, count}] (the Queues pane)."""
        snap = await self.snapshot()
        totals: dict[str, dict[PendingReason, int]] = {}
        for shape, size in (await self.queues()).values():
            counts = totals.setdefault(shape.service, {})
            reason = self.of_shape(snap, shape)
            counts[reason] = counts.get(reason, 0) + size
        return {service: [{**r.view(), "count": n} for r, n in sorted(counts.items(), key=lambda rn: -rn[1])]
                for service, counts in totals.items()}

    async def condition(self, codes: Iterable[ReasonCode]) -> ColumnElement[bool]:
        """SQL: pending tasks whose reason is one of `codes` (`priority` selects what `busy` does: the place in
        the queue is decided per task)."""
        wanted = set(codes)
        if ReasonCode.PRIORITY in wanted:
            wanted.add(ReasonCode.BUSY)
        now = utcnow()
        stopping = Task.stopping_attempt_id.is_not(None)
        backing_off = and_(Task.stopping_attempt_id.is_(None), Task.available_at > now)
        queued = and_(Task.stopping_attempt_id.is_(None), or_(Task.available_at.is_(None), Task.available_at <= now))
        conds: list[ColumnElement[bool]] = []
        if ReasonCode.STOPPING in wanted:
            conds.append(stopping)
        if ReasonCode.BACKOFF in wanted:
            conds.append(backing_off)
        if wanted & SHAPE_CODES:
            snap = await self.snapshot()
            shapes = {shape for shape, _ in (await self.queues()).values() if self.of_shape(snap, shape).code in wanted}
            conds.append(and_(queued, or_(false(), *(s.condition() for s in shapes))))
        return and_(Task.status == TaskStatus.PENDING.value, or_(false(), *conds))
