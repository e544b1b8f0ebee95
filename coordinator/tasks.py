"""Task lifecycle: submit, look up, cancel / retry / requeue, and the end of attempts (retry or finish).

Every change is made in PostgreSQL first, conditional on the current state and attempt, so a double
key press or a late report changes a task once; the Redis index follows.
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, String, and_, bindparam, cast, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.core import Core, queued, send_commands, utcnow, write_audit
from coordinator.errors import BatchNotFound, IllegalTransition, InvalidInput, QueueFull, StaleAttempt, TaskNotFound
from coordinator.models import Attempt, Batch, Task, TaskLog
from coordinator.queue import QueuedTask
from coordinator.schemas import BulkAction, TaskFilter, TaskSpec
from coordinator.states import ALLOWED_FROM, Action, EndReason, TaskStatus
from coordinator.textcheck import check_text

log = logging.getLogger(__name__)


def task_view(row: Any) -> dict[str, Any]:
    """A task as the API and the console show it."""
    data = dict(row._mapping)
    data["resources"] = {k: data.pop(k) for k in ("cpu", "memory_gb", "gpu", "gpu_memory_gb")}
    return data


COPY_COLUMNS = ("id", "service", "task_type", "name", "input_params", "priority", "group", "labels", "cpu",
                "memory_gb", "gpu", "gpu_memory_gb", "max_retries", "timeout_s", "retry_on", "input_files", "outputs",
                "submitted_by", "status", "attempts", "retry_count", "worker_losses", "gpus", "batch_id", "seq")
"""The columns a submission writes (the rest are NULL or their server default, now())."""
COPY_JSON = tuple(i for i, c in enumerate(COPY_COLUMNS) if c in ("input_params", "labels", "retry_on", "input_files",
                                                                  "outputs", "gpus"))
COPY_FROM = 16
"""Submissions of this many tasks or more are written with COPY; smaller ones with INSERT ... RETURNING."""
NEXT_SEQS = text("SELECT nextval(pg_get_serial_sequence('tasks', 'seq')) FROM generate_series(1, :n)")

QUEUED_COLUMNS = (Task.id, Task.service, Task.group, Task.priority, Task.seq, Task.labels, Task.cpu, Task.memory_gb,
                  Task.gpu, Task.gpu_memory_gb, Task.available_at)
"""What the queue index needs of a task row (see core.queued)."""


@dataclass(frozen=True)
class Submitted:
    """Ids of stored tasks, in submission order, and their batch."""

    ids: list[uuid.UUID]
    batch_id: uuid.UUID | None
    views: list[dict[str, Any]] = field(default_factory=list)
    """The tasks as `TaskService.get` shows them, for small submissions (answered without reading them back)."""


@dataclass(frozen=True)
class AttemptEnd:
    """The end of one attempt that did not succeed."""

    task_id: uuid.UUID
    attempt_id: uuid.UUID
    reason: EndReason
    error: str | None = None
    exit_code: int | None = None


@dataclass
class ActionResult:
    """What a cancel / retry / requeue changed."""

    changed: list[uuid.UUID] = field(default_factory=list)
    skipped: int = 0

    def view(self) -> dict[str, Any]:
        return {"changed": len(self.changed), "skipped": self.skipped, "ids": [str(i) for i in self.changed]}


def filter_clause(flt: TaskFilter) -> ColumnElement[bool]:
    """SQL condition of a task filter."""
    conds: list[ColumnElement[bool]] = []
    if flt.status:
        conds.append(Task.status.in_([s.value for s in flt.status]))
    if flt.service:
        conds.append(Task.service.in_(flt.service))
    if flt.group:
        conds.append(Task.group.in_(flt.group))
    if flt.batch_id:
        conds.append(Task.batch_id == flt.batch_id)
    if flt.worker_id:
        conds.append(Task.worker_id == flt.worker_id)
    if flt.search:
        check_text(flt.search, "search")  # PostgreSQL refuses NUL bytes: a 422, not a database error
        escaped = flt.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        conds.append(or_(Task.name.ilike(like), Task.task_type.ilike(like), cast(Task.id, String).ilike(like)))
    return and_(True, *conds)


SORTABLE = {"created_at", "priority", "status", "service", "name", "started_at", "finished_at", "seq"}


class TaskService:
    """Client-facing task operations and the shared attempt-ending logic."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings

    # -- submission -------------------------------------------------------------------------------

    async def submit(self, specs: Sequence[TaskSpec], actor: str = "", batch_name: str | None = None,
                     batch_id: uuid.UUID | None = None, ids: Sequence[uuid.UUID] | None = None) -> Submitted:
        """Store tasks (all or none) and queue them; returns only after the PostgreSQL commit.

        `ids`, when given, are the tasks' ids (chosen earlier, e.g. to store their input files first).

        Raises:
            QueueFull: a service would pass max_pending_per_service.
            InvalidInput: text with NUL bytes, shell tasks where they are not allowed.
        """
        for i, spec in enumerate(specs):
            prefix = f"tasks[{i}]." if len(specs) > 1 or batch_name is not None else ""
            check_text(spec.name, prefix + "name")
            check_text(spec.input_params, prefix + "input_params")
            if spec.task_type == "shell" and not self.settings.allow_shell_tasks:
                raise InvalidInput(prefix + "task_type", "shell tasks are disabled on this coordinator")
        await self._check_room(specs)
        batching = batch_name is not None or batch_id is not None
        rows = [self._row(spec, actor) for spec in specs]
        for row, task_id in zip(rows, ids or (), strict=False):
            row["id"] = task_id
        async with self.core.engine.begin() as conn:
            if batching:
                if batch_id is None:
                    batch_id = uuid.uuid4()
                    await conn.execute(insert(Batch).values(id=batch_id, name=batch_name or "", total=0))
                updated = await conn.execute(update(Batch).where(Batch.id == batch_id)
                                             .values(total=Batch.total + len(rows)))
                if updated.rowcount == 0:
                    raise BatchNotFound(str(batch_id))
                for row in rows:
                    row["batch_id"] = batch_id
            views: list[dict[str, Any]] = []
            if len(rows) < COPY_FROM:  # a few: one INSERT that returns them, so the answer needs no read
                stored = (await conn.execute(insert(Task).returning(*Task.__table__.c, sort_by_parameter_order=True),
                                             rows)).all()
                seqs = [r.seq for r in stored]
                views = [{**task_view(r), "attempt_history": []} for r in stored]
            else:
                seqs = await self._copy_in(conn, rows)
        try:
            await self.core.index.put_pending([
                QueuedTask(id=str(r["id"]), service=r["service"], group=r["group"], priority=r["priority"], seq=seq,
                           labels=r["labels"], cpu=r["cpu"], memory_gb=r["memory_gb"], gpu=r["gpu"],
                           gpu_memory_gb=r["gpu_memory_gb"]) for r, seq in zip(rows, seqs, strict=True)])
            await self.core.wake_leases()
        except (RedisError, OSError) as exc:
            # Committed, so they exist and will run: answering with an error would make the client submit them
            # again. Redis is only the index; the leader's reconciler queues them from PostgreSQL.
            log.warning("%d task(s) stored but not queued (%s: %s); the reconciler will queue them", len(rows),
                        type(exc).__name__, exc)
        return Submitted([r["id"] for r in rows], batch_id, views)

    @staticmethod
    async def _copy_in(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert task rows with COPY (several times faster than INSERT for a batch); returns their `seq`s.

        The sequence numbers are taken first, in one query, so the queue index needs nothing back from the
        insert; the taking also opens the transaction the COPY then runs in.
        """
        seqs = sorted((await conn.execute(NEXT_SEQS, {"n": len(rows)})).scalars())
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        values = operator.itemgetter(*COPY_COLUMNS[:-1])
        records = [[*values(r), seq] for r, seq in zip(rows, seqs, strict=True)]
        for record in records:  # JSONB goes as JSON text, as SQLAlchemy's own binds send it
            for i in COPY_JSON:
                record[i] = orjson.dumps(record[i]).decode()
        await raw.copy_records_to_table("tasks", records=records, columns=COPY_COLUMNS)
        return seqs

    def _row(self, spec: TaskSpec, actor: str) -> dict[str, Any]:
        resources = spec.resources
        return {
            "id": uuid.uuid4(), "service": spec.service, "task_type": spec.task_type, "name": spec.name,
            "input_params": spec.input_params, "priority": spec.priority, "group": spec.group,
            "labels": sorted(set(spec.labels)), "cpu": resources.cpu, "memory_gb": resources.memory_gb,
            "gpu": resources.gpu, "gpu_memory_gb": resources.gpu_memory_gb,
            "max_retries": self.settings.max_retries if spec.max_retries is None else spec.max_retries,
            "timeout_s": spec.timeout_s or self.settings.task_timeout,
            "retry_on": [r.value for r in spec.retry_on], "input_files": spec.input_files,
            "outputs": spec.outputs, "submitted_by": actor, "status": TaskStatus.PENDING.value,
            "attempts": 0, "retry_count": 0, "worker_losses": 0, "gpus": [], "batch_id": None,
        }

    async def _check_room(self, specs: Sequence[TaskSpec]) -> None:
        adding: dict[str, int] = {}
        for spec in specs:
            adding[spec.service] = adding.get(spec.service, 0) + 1
        pending = await self.core.index.pending_by_service()
        limit = self.settings.max_pending_per_service
        for service, count in adding.items():
            if pending.get(service, 0) + count > limit:
                raise QueueFull(service, pending.get(service, 0), limit, count)

    # -- reading ----------------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID) -> dict[str, Any]:
        """One task with its attempts."""
        async with self.core.engine.connect() as conn:
            row = (await conn.execute(select(*Task.__table__.c).where(Task.id == task_id))).first()
            if row is None:
                raise TaskNotFound(str(task_id))
            attempts = (await conn.execute(select(*Attempt.__table__.c).where(Attempt.task_id == task_id)
                                           .order_by(Attempt.number))).all()
        view = task_view(row)
        view["attempt_history"] = [dict(a._mapping) for a in attempts]
        return view

    async def page(self, flt: TaskFilter, page: int = 1, page_size: int = 50,
                   sort: str = "-created_at") -> dict[str, Any]:
        """One page of tasks matching a filter, newest first by default; `total` counts all matches."""
        column = sort.lstrip("-")
        if column not in SORTABLE:
            raise InvalidInput("sort", f"must be one of {sorted(SORTABLE)} (prefix - for descending)")
        order = getattr(Task, column)
        order_by = [order.desc() if sort.startswith("-") else order.asc(), Task.seq.desc()]
        where = filter_clause(flt)
        async with self.core.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(Task).where(where))).scalar_one()
            rows = (await conn.execute(select(*Task.__table__.c).where(where).order_by(*order_by)
                                       .limit(page_size).offset((page - 1) * page_size))).all()
        return {"items": [task_view(r) for r in rows], "total": total, "page": page, "page_size": page_size}

    async def logs(self, task_id: uuid.UUID, after: int = 0, limit: int = 1000,
                   attempt_id: uuid.UUID | None = None) -> dict[str, Any]:
        """Log lines after line id `after` (0: from the start), for live tails."""
        cond = and_(TaskLog.task_id == task_id, TaskLog.id > after)
        if attempt_id is not None:
            cond = and_(cond, TaskLog.attempt_id == attempt_id)
        async with self.core.engine.connect() as conn:
            exists = (await conn.execute(select(Task.id).where(Task.id == task_id))).first()
            if exists is None:
                raise TaskNotFound(str(task_id))
            rows = (await conn.execute(select(TaskLog.id, TaskLog.attempt_id, TaskLog.ts, TaskLog.stream,
                                              TaskLog.line).where(cond).order_by(TaskLog.id).limit(limit))).all()
        lines = [dict(r._mapping) for r in rows]
        return {"lines": lines, "next": lines[-1]["id"] if lines else after}

    # -- operator actions -------------------------------------------------------------------------

    async def resolve(self, selector: BulkAction) -> list[uuid.UUID]:
        """The task ids a bulk action names (ids as given, or every task matching the filter)."""
        if selector.ids is not None:
            return list(dict.fromkeys(selector.ids))
        assert selector.filter is not None
        async with self.core.engine.connect() as conn:
            return list((await conn.execute(select(Task.id).where(filter_clause(selector.filter)))).scalars())

    async def act(self, action: Action, ids: Sequence[uuid.UUID], actor: str, single: bool = False,
                  attempt_id: uuid.UUID | None = None) -> ActionResult:
        """Cancel, retry or requeue tasks; only tasks in a state the action allows change.

        With `single`, a task that cannot change raises (404 / 409) instead of being skipped. With
        `attempt_id` (the attempt the operator was looking at) a task changes only while that is still
        its attempt, so an action aimed at one attempt never hits the next.
        """
        handler = {Action.CANCEL: self._cancel, Action.RETRY: self._retry, Action.REQUEUE: self._requeue}[action]
        cond = and_(Task.id.in_(ids), Task.status.in_([s.value for s in ALLOWED_FROM[action]]))
        if action == Action.REQUEUE:  # a queued task is already where requeue would put it
            cond = and_(cond, or_(Task.status == TaskStatus.RUNNING.value, Task.available_at.is_not(None)))
        if attempt_id is not None:
            cond = and_(cond, Task.attempt_id == attempt_id)
        result = ActionResult()
        async with self.core.engine.begin() as conn:
            rows = (await conn.execute(select(Task.id, Task.status, Task.worker_id, Task.attempt_id).where(cond)
                                       .with_for_update())).all()
            if single and not rows:
                await self._refuse(conn, ids[0], action, attempt_id)
            if rows:
                await handler(conn, rows)
            result.changed = [r.id for r in rows]
            result.skipped = len(ids) - len(rows)
            target = str(ids[0]) if len(ids) == 1 else f"{len(ids)} tasks"
            await write_audit(conn, actor, f"task.{action.value}", target, len(rows),
                              {"skipped": result.skipped})
        await self.core.resync(result.changed)
        return result

    @staticmethod
    async def _refuse(conn: Any, task_id: uuid.UUID, action: Action, attempt_id: uuid.UUID | None) -> None:
        """Raise the error that says why `action` left this task as it was."""
        row = (await conn.execute(select(Task.status, Task.attempt_id).where(Task.id == task_id))).first()
        if row is None:
            raise TaskNotFound(str(task_id))
        if attempt_id is not None and row.attempt_id != attempt_id:
            raise StaleAttempt(str(task_id), str(attempt_id))
        queued = action == Action.REQUEUE and row.status == TaskStatus.PENDING
        raise IllegalTransition(str(task_id), "pending and already queued" if queued else row.status, action.value)

    async def _end_running(self, conn: Any, rows: Sequence[Any], reason: EndReason) -> None:
        """Close the current attempts of running rows and tell their workers to kill them."""
        running = [r for r in rows if r.status == TaskStatus.RUNNING]
        if not running:
            return
        await conn.execute(update(Attempt).where(Attempt.id.in_([r.attempt_id for r in running]))
                           .where(Attempt.ended_at.is_(None)).values(ended_at=utcnow(), end_reason=reason.value))
        await send_commands(conn, [(r.worker_id, "cancel-task", {"task_id": str(r.id),
                                                                  "attempt_id": str(r.attempt_id)})
                                   for r in running if r.worker_id], self.core)

    async def _cancel(self, conn: Any, rows: Sequence[Any]) -> None:
        await self._end_running(conn, rows, EndReason.CANCELLED)
        await conn.execute(update(Task).where(Task.id.in_([r.id for r in rows])).values(
            status=TaskStatus.CANCELLED.value, end_reason=EndReason.CANCELLED.value, finished_at=utcnow(),
            updated_at=utcnow()))

    async def _requeue(self, conn: Any, rows: Sequence[Any]) -> None:
        await self._end_running(conn, rows, EndReason.REQUEUED)
        await conn.execute(update(Task).where(Task.id.in_([r.id for r in rows])).values(
            status=TaskStatus.PENDING.value, available_at=None, updated_at=utcnow()))

    async def _retry(self, conn: Any, rows: Sequence[Any]) -> None:
        await conn.execute(update(Task).where(Task.id.in_([r.id for r in rows])).values(
            status=TaskStatus.PENDING.value, available_at=None, retry_count=0, worker_losses=0, error=None,
            result=None, end_reason=None, finished_at=None, progress=None, updated_at=utcnow()))

    # -- attempts that end without success ------------------------------------------------------

    def backoff(self, retry_count: int) -> timedelta:
        """Delay before retry number `retry_count` (1, 2, ...): base * 2**(n-1), capped."""
        seconds = min(self.settings.retry_base_delay * 2 ** max(retry_count - 1, 0), self.settings.retry_max_delay)
        return timedelta(seconds=seconds)

    async def end_attempts(self, ends: Sequence[AttemptEnd], worker_id: uuid.UUID | None = None) -> set[uuid.UUID]:
        """Retry or finish tasks whose current attempt failed, timed out, or lost its worker.

        An end whose attempt is no longer current (or, with `worker_id`, not that worker's) is ignored
        and left out of the returned set of accepted attempt ids: the fencing check.
        """
        by_attempt = {e.attempt_id: e for e in ends}
        now = utcnow()
        async with self.core.engine.begin() as conn:
            cond = and_(Task.id.in_([e.task_id for e in ends]), Task.status == TaskStatus.RUNNING.value,
                        Task.attempt_id.in_(list(by_attempt)))
            if worker_id is not None:
                cond = and_(cond, Task.worker_id == worker_id)
            rows = (await conn.execute(select(*Task.__table__.c).where(cond).with_for_update())).all()
            if not rows:
                return set()
            decided = [SimpleNamespace(**{**r._mapping, **self._decide(r, by_attempt[r.attempt_id], now)})
                       for r in rows]
            await conn.execute(update(Attempt).where(Attempt.id == bindparam("a_id")).values(
                ended_at=now, end_reason=bindparam("a_reason"), error=bindparam("a_error"),
                exit_code=bindparam("a_exit")), [
                {"a_id": e.attempt_id, "a_reason": e.reason.value, "a_error": e.error, "a_exit": e.exit_code}
                for e in (by_attempt[r.attempt_id] for r in rows)])
            await conn.execute(update(Task).where(Task.id == bindparam("t_id")).values(
                {**{name: bindparam(f"t_{name}") for name in DECIDED_FIELDS}, "updated_at": now}),
                [{"t_id": t.id, **{f"t_{name}": getattr(t, name) for name in DECIDED_FIELDS}} for t in decided])
        retry = [queued(t) for t in decided if t.status == TaskStatus.PENDING]
        await self.core.index.put_pending(retry)
        for status in (TaskStatus.FAILED, TaskStatus.TIMEOUT):
            await self.core.index.finish(status, [str(t.id) for t in decided if t.status == status])
        if retry:
            await self.core.wake_leases()
        return {r.attempt_id for r in rows}

    def _decide(self, task: Any, end: AttemptEnd, now: datetime) -> dict[str, Any]:
        """A task's next state after an attempt that did not succeed: retry (now or after backoff) or finish."""
        change: dict[str, Any] = {"end_reason": end.reason.value, "error": end.error,
                                  "retry_count": task.retry_count, "worker_losses": task.worker_losses,
                                  "status": TaskStatus.PENDING.value, "available_at": None, "finished_at": None}
        if end.reason == EndReason.REQUEUED:
            return change
        if end.reason == EndReason.WORKER_LOST:
            change["worker_losses"] += 1
            cap = self.settings.max_worker_losses
            if change["worker_losses"] >= cap:
                change["error"] = f"worker lost {change['worker_losses']} times (cap {cap})" + (
                    f": {end.error}" if end.error else "")
                return {**change, "status": TaskStatus.FAILED.value, "finished_at": now}
            if end.reason.value in task.retry_on:
                return change
        elif end.reason.value in task.retry_on and task.retry_count < task.max_retries:
            change["retry_count"] += 1
            return {**change, "available_at": now + self.backoff(change["retry_count"])}
        final = TaskStatus.TIMEOUT if end.reason == EndReason.TIMEOUT else TaskStatus.FAILED
        return {**change, "status": final.value, "finished_at": now}


DECIDED_FIELDS = ("status", "retry_count", "worker_losses", "available_at", "error", "end_reason", "finished_at")
