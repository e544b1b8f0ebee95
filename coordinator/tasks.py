"""Tasks as clients see them: submit, look up, list, logs, and which tasks a bulk action names.

Submission is answered only after the PostgreSQL commit; every later change of a task's state is
`coordinator.lifecycle`'s.
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, String, and_, cast, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator import reasonhistory, timeline
from coordinator.core import Core, utcnow
from coordinator.errors import BatchNotFound, InvalidInput, QueueFull, TaskNotFound, TooManyQueues
from coordinator.models import Attempt, Batch, Task, TaskAction, TaskLog, Worker
from coordinator.pending import PendingReason, PendingReasons, Shape
from coordinator.queue import QueuedTask
from coordinator.schemas import BulkAction, TaskFilter, TaskSpec
from coordinator.states import TaskStatus
from coordinator.textcheck import check_text

log = logging.getLogger(__name__)


def task_view(row: Any, reason: PendingReason | None = None,
              hostnames: dict[uuid.UUID, str] | None = None) -> dict[str, Any]:
    """A task as the API and the console show it; `pending_reason` is `{code, message}` for a pending task, and
    `worker_hostname` names its (latest) worker, if still known."""
    data = dict(row._mapping)
    data["worker_hostname"] = (hostnames or {}).get(row.worker_id)
    data["resources"] = {k: data.pop(k) for k in ("cpu", "memory_gb", "gpu", "gpu_memory_gb")}
    data["pending_reason"] = reason.view() if reason is not None else None
    return data


async def _hostnames(conn: AsyncConnection, worker_ids: Sequence[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    """The hostnames of these workers (one query by primary key; removed workers are left out)."""
    wanted = {w for w in worker_ids if w is not None}
    if not wanted:
        return {}
    rows = await conn.execute(select(Worker.id, Worker.hostname).where(Worker.id.in_(wanted)))
    return {r.id: r.hostname for r in rows}


COPY_COLUMNS = ("id", "service", "task_type", "name", "input_params", "priority", "group", "labels", "cpu",
                "memory_gb", "gpu", "gpu_memory_gb", "max_retries", "timeout_s", "retry_on", "input_files", "outputs",
                "submitted_by", "exclusive", "status", "attempts", "retry_count", "worker_losses", "gpus", "batch_id",
                "max_wait_s", "seq")
"""The columns a submission writes (the rest are NULL or their server default, now())."""
COPY_JSON = tuple(i for i, c in enumerate(COPY_COLUMNS) if c in ("input_params", "labels", "retry_on", "input_files",
                                                                  "outputs", "gpus"))
COPY_FROM = 16
"""Submissions of this many tasks or more are written with COPY; smaller ones with INSERT ... RETURNING."""
INSERT_RETURNING = insert(Task).returning(*Task.__table__.c)
"""One task's INSERT, returning the row the answer shows (built once)."""
NEXT_SEQS = text("SELECT nextval(pg_get_serial_sequence('tasks', 'seq')) FROM generate_series(1, :n)")


@dataclass(frozen=True)
class Submitted:
    """Ids of stored tasks, in submission order, and their batch."""

    ids: list[uuid.UUID]
    batch_id: uuid.UUID | None
    views: list[dict[str, Any]] = field(default_factory=list)
    """The tasks as `TaskService.get` shows them, for small submissions (answered without reading them back)."""


def filter_clause(flt: TaskFilter, waiting: ColumnElement[bool] | None = None) -> ColumnElement[bool]:
    """SQL condition of a task filter; `waiting` is the condition for its pending reasons (`PendingReasons`)."""
    conds: list[ColumnElement[bool]] = [] if waiting is None else [waiting]
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
        hosts = select(Worker.id).where(Worker.hostname.ilike(like)).scalar_subquery()
        conds.append(or_(Task.name.ilike(like), Task.task_type.ilike(like), cast(Task.id, String).ilike(like),
                         Task.status.ilike(like), Task.service.ilike(like), Task.group.ilike(like),
                         cast(Task.input_params, String).ilike(like), Task.worker_id.in_(hosts)))
    return and_(True, *conds)


SORTABLE = {"created_at", "priority", "status", "service", "name", "started_at", "finished_at", "seq"}


class TaskService:
    """Client-facing task operations: submission and reading."""

    def __init__(self, core: Core, reasons: PendingReasons) -> None:
        self.core = core
        self.settings = core.settings
        self.reasons = reasons

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
        one_statement = not batching and len(rows) == 1  # one INSERT: committed by itself
        async with self.core.statements.connect() if one_statement else self.core.engine.begin() as conn:
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
            stored: Sequence[Any] = []
            if len(rows) == 1:  # a single task: a plain INSERT (as a list of one, 0.2 ms more of SQLAlchemy's CPU)
                stored = [(await conn.execute(INSERT_RETURNING, rows[0])).one()]
                seqs = [stored[0].seq]
            elif len(rows) < COPY_FROM:  # a few: one INSERT that returns them, so the answer needs no read
                stored = (await conn.execute(insert(Task).returning(*Task.__table__.c, sort_by_parameter_order=True),
                                             rows)).all()
                seqs = [r.seq for r in stored]
            else:
                seqs = await self._copy_in(conn, rows)
        for row in rows:
            self.core.metrics.submitted.labels(row["service"]).inc()
        try:
            await self.core.index.put_pending([
                QueuedTask(id=str(r["id"]), service=r["service"], group=r["group"], priority=r["priority"], seq=seq,
                           labels=r["labels"], cpu=r["cpu"], memory_gb=r["memory_gb"], gpu=r["gpu"],
                           gpu_memory_gb=r["gpu_memory_gb"]) for r, seq in zip(rows, seqs, strict=True)], new=True)
            await self.core.waker.wake_all()
        except (RedisError, OSError) as exc:
            # Committed, so they exist and will run: answering with an error would make the client submit them
            # again. Redis is only the index; the leader's reconciler queues them from PostgreSQL.
            log.warning("%d task(s) stored but not queued (%s: %s); the reconciler will queue them", len(rows),
                        type(exc).__name__, exc)
        views = [{**v, "attempt_history": []} for v in await self._views(stored)]
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
            "max_wait_s": spec.max_wait_s or self.settings.task_max_wait,
            "retry_on": [r.value for r in spec.retry_on], "input_files": spec.input_files,
            "outputs": spec.outputs, "submitted_by": actor, "status": TaskStatus.PENDING.value,
            "exclusive": self.settings.exclusive_tasks if spec.exclusive is None else spec.exclusive,
            "attempts": 0, "retry_count": 0, "worker_losses": 0, "gpus": [], "batch_id": None,
        }

    async def _check_room(self, specs: Sequence[TaskSpec]) -> None:
        """Refuse a submission past max_queue_shapes (new queues in a group: every claim of its workers reads each
        of them; tasks for queues that hold tasks are always let in) or max_pending_per_service. Two submissions
        at once may pass either bound by a little."""
        room = await self.core.index.room(specs)
        for group, (held, opening) in room.queues.items():
            if opening and held + opening > self.settings.max_queue_shapes:
                raise TooManyQueues(group, held, opening, self.settings.max_queue_shapes)
        adding: dict[str, int] = {}
        for spec in specs:
            adding[spec.service] = adding.get(spec.service, 0) + 1
        limit = self.settings.max_pending_per_service
        for service, count in adding.items():
            if room.pending[service] + count > limit:
                raise QueueFull(service, room.pending[service], limit, count)

    # -- reading ----------------------------------------------------------------------------------

    async def get(self, task_id: uuid.UUID) -> dict[str, Any]:
        """One task with its attempts."""
        async with self.core.engine.connect() as conn:
            row = (await conn.execute(select(*Task.__table__.c).where(Task.id == task_id))).first()
            if row is None:
                raise TaskNotFound(str(task_id))
            attempts = (await conn.execute(select(*Attempt.__table__.c).where(Attempt.task_id == task_id)
                                           .order_by(Attempt.number))).all()
        view = (await self._views([row]))[0]
        view["attempt_history"] = [dict(a._mapping) for a in attempts]
        return view

    async def timeline(self, task_id: uuid.UUID) -> dict[str, Any]:
        """What happened to a task, oldest first: submitted, each attempt's lease, start, end and retry, operator
        actions, why it waited while it did, and (while it waits) why it waits now (see `coordinator.timeline`)."""
        async with self.core.engine.connect() as conn:
            row = (await conn.execute(select(*Task.__table__.c).where(Task.id == task_id))).first()
            if row is None:
                raise TaskNotFound(str(task_id))
            attempts = (await conn.execute(select(*Attempt.__table__.c, Worker.hostname)
                                           .outerjoin(Worker, Worker.id == Attempt.worker_id)
                                           .where(Attempt.task_id == task_id).order_by(Attempt.number))).all()
            actions = (await conn.execute(select(*TaskAction.__table__.c).where(TaskAction.task_id == task_id)
                                          .order_by(TaskAction.id))).all()
            now = utcnow()
            spans = timeline.waits(row, attempts, actions, now)
            changes = await reasonhistory.changes(conn, Shape.of_task(row), spans[0][0], spans[-1][1]) if spans else []
        [reason] = await self.reasons.for_tasks([row])
        return {"task_id": task_id, "status": row.status,
                "events": timeline.build(row, attempts, actions, reason, now, spans, changes)}

    async def page(self, flt: TaskFilter, page: int = 1, page_size: int = 50,
                   sort: str = "-created_at") -> dict[str, Any]:
        """One page of tasks matching a filter, newest first by default; `total` counts all matches."""
        column = sort.lstrip("-")
        if column not in SORTABLE:
            raise InvalidInput("sort", f"must be one of {sorted(SORTABLE)} (prefix - for descending)")
        order = getattr(Task, column)
        order_by = [order.desc() if sort.startswith("-") else order.asc(), Task.seq.desc()]
        where = await self._where(flt)
        async with self.core.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(Task).where(where))).scalar_one()
            rows = (await conn.execute(select(*Task.__table__.c).where(where).order_by(*order_by)
                                       .limit(page_size).offset((page - 1) * page_size))).all()
        return {"items": await self._views(rows), "total": total, "page": page, "page_size": page_size}

    async def _views(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        """Task rows as the API shows them, each pending one with its reason, each leased one with its worker's
        hostname."""
        reasons = await self.reasons.for_tasks(rows)
        hostnames: dict[uuid.UUID, str] = {}
        if any(row.worker_id is not None for row in rows):
            async with self.core.engine.connect() as conn:
                hostnames = await _hostnames(conn, [row.worker_id for row in rows])
        return [task_view(row, reason, hostnames) for row, reason in zip(rows, reasons, strict=True)]

    async def _where(self, flt: TaskFilter) -> ColumnElement[bool]:
        """SQL condition of a filter, its pending reasons included."""
        waiting = await self.reasons.condition(flt.pending_reason) if flt.pending_reason else None
        return filter_clause(flt, waiting)

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

    async def resolve(self, selector: BulkAction) -> list[uuid.UUID]:
        """The task ids a bulk action names (ids as given, or every task matching the filter)."""
        if selector.ids is not None:
            return list(dict.fromkeys(selector.ids))
        assert selector.filter is not None
        where = await self._where(selector.filter)
        async with self.core.engine.connect() as conn:
            return list((await conn.execute(select(Task.id).where(where))).scalars())
