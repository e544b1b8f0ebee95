"""Every change of a task's state: one function per transition, each a conditional PostgreSQL update, then the index.

A transition changes only tasks in a state that `states.TRANSITIONS` allows it from and, where an attempt is
named, only while that attempt is current (its fencing token): a late report, a double key press or two
coordinators at once change a task once. PostgreSQL decides; the Redis index follows (and is repaired from
PostgreSQL when following fails).

An attempt the coordinator ends while its process may still run — a cancel, a requeue, a timeout its agent
did not report — becomes the task's `stopping_attempt_id`. The task is not leased again until that attempt's
worker confirms the process gone (it acknowledges the cancel-task command once the process has ended), or is
lost, or `stop_wait_max` passes: an operator or a timer never makes two attempts of a task run at once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from aiddwire import CommandKind, EndReason, LeasedTask
from coordinator.core import Core, queued, send_commands, utcnow, write_audit
from coordinator.errors import IllegalTransition, StaleAttempt, TaskNotFound
from coordinator.metrics import Tally
from coordinator.models import Attempt, Task
from coordinator.queue import Claim
from coordinator.schemas import TaskEvent
from coordinator.states import ALLOWED_FROM, Action, TaskStatus, sources
from coordinator.textcheck import check_text

log = logging.getLogger(__name__)

ACTION_CHUNK = 5000
"""Tasks changed per transaction by a bulk action: bounded locks, and far below PostgreSQL's 32 767 parameters."""


def _states(target: TaskStatus) -> str:
    """The SQL list of the states a task may change to `target` from, e.g. `'pending'`."""
    return ", ".join(f"'{s.value}'" for s in sorted(sources(target)))


def by_key(fence: str) -> str:
    """`fence`, a condition on the rows a batch statement joins by primary key, written so that PostgreSQL only
    checks it on those rows: never uses it to find them, nor trusts its statistics to plan the join.

    A queue's statuses swing faster than PostgreSQL analyses the table. With statistics taken when nothing was
    pending, a plain `status IN ('pending')` made each lease's update read every pending task (and their dead
    versions) through the status index, or rescan its list of ids once per pending task: 25-100 ms of PostgreSQL's
    CPU for a lease of 100 tasks in a drain of 3 000, against ~3 ms by key. `coalesce(fence, false)` means the
    same in a WHERE clause (a row passes only where `fence` is true), but the planner neither matches it to an index
    nor reads a selectivity for it from the statistics (it takes one half): it joins by key, or on a small table
    (a connection's first plans, which see the batch's size) hashes the batch against one scan of the table.
    """
    return f"coalesce({fence}, false)"


START = text(f"""
WITH leased AS (
    UPDATE tasks AS t SET status = 'running', attempt_id = v.attempt_id, attempts = t.attempts + 1,
        worker_id = :worker, gpus = CAST(v.gpus AS jsonb), started_at = now(), available_at = NULL,
        progress = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS uuid[]), CAST(:gpus AS text[])) WITH ORDINALITY
        AS v(id, attempt_id, gpus, claim)
    WHERE t.id = v.id AND {by_key(f"t.status IN ({_states(TaskStatus.RUNNING)}) AND t.stopping_attempt_id IS NULL")}
    RETURNING v.claim, t.id, t.attempt_id, t.attempts, t.gpus, t.service, t.task_type, t.name, t.input_params,
        t.timeout_s, t.input_files, t.outputs, t.priority, t."group", t.exclusive, t.cpu, t.memory_gb, t.gpu,
        t.gpu_memory_gb, extract(epoch FROM t.started_at - t.created_at) AS waited_s
), made AS (
    INSERT INTO attempts (id, task_id, number, worker_id, gpus)
    SELECT attempt_id, id, attempts, :worker, gpus FROM leased
)
SELECT claim, attempts, service, task_type, name, input_params, timeout_s, input_files, outputs, priority, "group",
    exclusive, cpu, memory_gb, gpu, gpu_memory_gb, waited_s
FROM leased ORDER BY claim
""")
"""Start claimed tasks (only those still pending, with no old attempt stopping) and open their attempts; returns,
in claim order, each started task's claim (its 1-based place in the arrays) and what its lease answer needs."""

SUCCEED = text(f"""
WITH done AS (
    UPDATE tasks AS t SET status = 'succeeded', result = CAST(v.result AS jsonb), end_reason = 'succeeded',
        progress = 1, error = NULL, finished_at = now(), updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS uuid[]), CAST(:results AS text[])) AS v(id, attempt_id, result)
    WHERE t.id = v.id AND {by_key(f"t.attempt_id = v.attempt_id AND t.status IN ({_states(TaskStatus.SUCCEEDED)}) "
                                  "AND t.worker_id = :worker")}
    RETURNING CAST(t.id AS text) AS id, t.attempt_id, t.service, extract(epoch FROM now() - t.started_at) AS ran_s
), ended AS (
    UPDATE attempts AS a SET ended_at = now(), end_reason = 'succeeded', exit_code = 0,
        started_at = CASE WHEN a.id = ANY(CAST(:started AS uuid[])) THEN COALESCE(a.started_at, now())
                          ELSE a.started_at END
    FROM done WHERE a.id = done.attempt_id
)
SELECT id, attempt_id, service, ran_s FROM done
""")
"""Record successes of the worker's current attempts and close those attempts, in one statement; `started`
names attempts whose `started` event came in the same report (short tasks: one write instead of two)."""

RECORD_END = text("""
WITH decided AS (
    UPDATE tasks AS t SET status = v.status, retry_count = v.retry_count, worker_losses = v.worker_losses,
        available_at = v.available_at, error = v.error, end_reason = v.end_reason, finished_at = v.finished_at,
        stopping_attempt_id = v.stopping_attempt_id, updated_at = :now
    FROM unnest(CAST(:ids AS uuid[]), CAST(:status AS text[]), CAST(:retry_count AS integer[]),
                CAST(:worker_losses AS integer[]), CAST(:available_at AS timestamptz[]), CAST(:error AS text[]),
                CAST(:end_reason AS text[]), CAST(:finished_at AS timestamptz[]), CAST(:stopping_attempt_id AS uuid[]))
        AS v(id, status, retry_count, worker_losses, available_at, error, end_reason, finished_at, stopping_attempt_id)
    WHERE t.id = v.id
)
UPDATE attempts AS a SET ended_at = :now, end_reason = v.reason, error = v.error, exit_code = v.exit_code,
    retry_at = v.retry_at
FROM unnest(CAST(:attempts AS uuid[]), CAST(:reasons AS text[]), CAST(:errors AS text[]),
            CAST(:exit_codes AS integer[]), CAST(:available_at AS timestamptz[]))
    AS v(id, reason, error, exit_code, retry_at)
WHERE a.id = v.id
""")
"""Write what `Lifecycle.end` decided for tasks it holds locked: each task's next state and its attempt's end, in
one statement (the arrays in the same order, one entry per task)."""

RECORD_ACTION = text("""
INSERT INTO task_events (task_id, kind, actor, detail)
SELECT v.id, :kind, :actor, jsonb_build_object('from', v.status, 'attempt_id', NULLIF(v.attempt_id, ''))
FROM unnest(CAST(:ids AS uuid[]), CAST(:from AS text[]), CAST(:attempts AS text[])) AS v(id, status, attempt_id)
""")
"""An operator action, one event per task changed (the task's timeline), in the action's own transaction."""

DECIDED_FIELDS = ("status", "retry_count", "worker_losses", "available_at", "error", "end_reason", "finished_at",
                  "stopping_attempt_id")


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


class Lifecycle:
    """The transitions of tasks, over one `Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings

    # -- pending -> running -------------------------------------------------------------------------

    async def start(self, worker_id: uuid.UUID, claims: Sequence[Claim]) -> list[LeasedTask]:
        """Start the tasks a worker's claim took in the index and return them as its lease answers them, in claim
        order; those PostgreSQL no longer has pending (taken meanwhile, cancelled, waiting for an old attempt) go
        back to where PostgreSQL says they are."""
        async with self.core.statements.connect() as conn:
            rows = (await conn.execute(START, {
                "worker": worker_id, "ids": [c.task_id for c in claims], "attempts": [c.attempt_id for c in claims],
                "gpus": [orjson.dumps(c.gpus).decode() for c in claims]})).all()
        leased: list[LeasedTask] = []
        leases, waits = Tally(), Tally()
        for (claim, attempt, service, task_type, name, input_params, timeout_s, input_files, outputs, priority, group,
             exclusive, cpu, memory_gb, gpu, gpu_memory_gb, waited_s) in rows:  # unpacked: a Row's attributes are slow
            taken = claims[claim - 1]
            leased.append({
                "task_id": taken.task_id, "attempt_id": taken.attempt_id, "attempt": attempt, "service": service,
                "task_type": task_type, "name": name, "input_params": input_params, "timeout_s": timeout_s,
                "gpus": taken.gpus, "input_files": input_files, "outputs": outputs, "priority": priority,
                "group": group, "exclusive": exclusive,
                "resources": {"cpu": cpu, "memory_gb": memory_gb, "gpu": gpu, "gpu_memory_gb": gpu_memory_gb}})
            leases.add(service)
            if attempt == 1:  # later attempts waited out a backoff or an operator, not the queue
                waits.add(service, max(0.0, float(waited_s)))
        leases.count(self.core.metrics.leased)
        waits.observe(self.core.metrics.queue_wait)
        if len(leased) < len(claims):
            confirmed = {t["task_id"] for t in leased}
            await self.core.resync(c.task_id for c in claims if c.task_id not in confirmed)
        return leased

    # -- running -> succeeded -----------------------------------------------------------------------

    async def succeed(self, worker_id: uuid.UUID, events: Sequence[TaskEvent],
                      started: set[uuid.UUID]) -> set[uuid.UUID]:
        """Record the successes of the worker's current attempts; returns the attempts accepted."""
        for i, event in enumerate(events):
            check_text(event.result, f"events[{i}].result")
        async with self.core.statements.connect() as conn:
            rows = (await conn.execute(SUCCEED, {
                "worker": worker_id, "ids": [e.task_id for e in events], "attempts": [e.attempt_id for e in events],
                "results": [orjson.dumps(e.result).decode() for e in events], "started": list(started)})).all()
        runs = Tally()
        for _task, _attempt, service, ran_s in rows:
            runs.add(service, max(0.0, float(ran_s)))
        runs.count(self.core.metrics.finished, TaskStatus.SUCCEEDED.value)
        runs.observe(self.core.metrics.run_time, EndReason.SUCCEEDED.value)
        await self.core.index.finish(TaskStatus.SUCCEEDED, [task for task, _attempt, _service, _ran_s in rows])
        return {attempt for _task, attempt, _service, _ran_s in rows}

    # -- running -> pending (a retry now or after a backoff) | failed | timeout --------------------------

    def backoff(self, retry_count: int) -> timedelta:
        """Delay before retry number `retry_count` (1, 2, ...): base * 2**(n-1), capped."""
        seconds = min(self.settings.retry_base_delay * 2 ** max(retry_count - 1, 0), self.settings.retry_max_delay)
        return timedelta(seconds=seconds)

    async def end(self, ends: Sequence[AttemptEnd], worker_id: uuid.UUID | None = None,
                  stopping: bool = False) -> set[uuid.UUID]:
        """Retry or finish tasks whose current attempt failed, timed out, was handed back or lost its worker.

        An end whose attempt is no longer current (or, with `worker_id`, not that worker's) is ignored and left
        out of the returned set of accepted attempt ids: the fencing check. With `stopping`, the coordinator ends
        attempts whose processes may still run: their workers are told to kill them, and the tasks wait for that.
        """
        if not ends:
            return set()
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
            decided = [SimpleNamespace(**{**r._mapping, **self._decide(r, by_attempt[r.attempt_id], now, stopping)})
                       for r in rows]
            attempt_ends = [by_attempt[t.attempt_id] for t in decided]
            await conn.execute(RECORD_END, {
                "now": now, "ids": [t.id for t in decided],
                **{name: [getattr(t, name) for t in decided] for name in DECIDED_FIELDS},
                "attempts": [e.attempt_id for e in attempt_ends], "reasons": [e.reason.value for e in attempt_ends],
                "errors": [e.error for e in attempt_ends], "exit_codes": [e.exit_code for e in attempt_ends]})
            if stopping:
                await self._kill(conn, rows)
        self._count_ends(decided, by_attempt, now)
        await self._index(decided)
        return {r.attempt_id for r in rows}

    def _count_ends(self, decided: Sequence[Any], by_attempt: dict[uuid.UUID, AttemptEnd], now: datetime) -> None:
        """Count committed ends: the attempt's run time, and the task finished or retried."""
        metrics = self.core.metrics
        for task in decided:
            reason = by_attempt[task.attempt_id].reason
            if task.started_at is not None:
                ran = (now - task.started_at).total_seconds()
                metrics.run_time.labels(task.service, reason.value).observe(max(0.0, ran))
            if task.status != TaskStatus.PENDING:
                metrics.finished.labels(task.service, task.status).inc()
            elif reason != EndReason.REQUEUED:
                metrics.retried.labels(task.service, reason.value).inc()

    def _decide(self, task: Any, end: AttemptEnd, now: datetime, stopping: bool) -> dict[str, Any]:
        """A task's next state after an attempt that did not succeed: retry (now or after backoff) or finish."""
        change: dict[str, Any] = {"end_reason": end.reason.value, "error": end.error,
                                  "retry_count": task.retry_count, "worker_losses": task.worker_losses,
                                  "status": TaskStatus.PENDING.value, "available_at": None, "finished_at": None,
                                  "stopping_attempt_id": end.attempt_id if stopping else task.stopping_attempt_id}
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

    async def time_out(self) -> int:
        """End running attempts past their timeout plus a grace for the agent to report (the leader's timer)."""
        grace = self.settings.heartbeat_interval * 2
        deadline = Task.started_at + func.make_interval(0, 0, 0, 0, 0, 0, Task.timeout_s + grace)
        async with self.core.engine.connect() as conn:
            late = (await conn.execute(select(Task.id, Task.attempt_id, Task.timeout_s).where(
                Task.status == TaskStatus.RUNNING.value, deadline < text("now()")))).all()
        ends = [AttemptEnd(r.id, r.attempt_id, EndReason.TIMEOUT, f"timed out after {r.timeout_s}s") for r in late]
        return len(await self.end(ends, stopping=True))

    async def expire_waiting(self) -> int:
        """Pending tasks still waiting `max_wait_s` after submission end as timeout: no worker took them in time
        (the leader's timer). Returns how many."""
        deadline = Task.created_at + func.make_interval(0, 0, 0, 0, 0, 0, Task.max_wait_s)
        async with self.core.engine.begin() as conn:
            rows = (await conn.execute(update(Task).where(
                Task.status == TaskStatus.PENDING.value, Task.max_wait_s.is_not(None), deadline < text("now()"))
                .values(status=TaskStatus.TIMEOUT.value, end_reason=EndReason.TIMEOUT.value, finished_at=utcnow(),
                        updated_at=utcnow(), error=func.concat("still pending after max_wait_s (", Task.max_wait_s,
                                                               " s): no worker took it in time"))
                .returning(*Task.__table__.c))).all()
        await self._index(rows)
        return len(rows)

    async def lose_workers(self, worker_ids: Sequence[uuid.UUID], reason: EndReason) -> int:
        """End the running attempts of workers that went offline (lost, or stopped); tasks waiting for an old
        attempt on them wait no more (a lost host's processes are its keeper's to stop). Returns the attempts
        ended."""
        async with self.core.engine.connect() as conn:
            running = (await conn.execute(select(Task.id, Task.attempt_id).where(
                Task.worker_id.in_(worker_ids), Task.status == TaskStatus.RUNNING.value))).all()
        error = "worker stopped" if reason == EndReason.REQUEUED else "worker stopped heartbeating"
        ended = await self.end([AttemptEnd(r.id, r.attempt_id, reason, error) for r in running if r.attempt_id])
        await self._release(Attempt.worker_id.in_(worker_ids))
        return len(ended)

    # -- the old attempt is gone ----------------------------------------------------------------------

    async def release(self, attempt_ids: Iterable[uuid.UUID]) -> int:
        """Their workers confirmed these attempts' processes gone: the tasks waiting on them may run again."""
        ids = list(attempt_ids)
        return await self._release(Attempt.id.in_(ids)) if ids else 0

    async def release_overdue(self) -> int:
        """Tasks that waited `stop_wait_max` for an old attempt their worker never confirmed gone run anyway."""
        overdue = Attempt.ended_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, self.settings.stop_wait_max)
        released = await self._release(overdue)
        if released:
            log.warning("%d task(s) waited %gs for an old attempt to be confirmed gone; queued anyway", released,
                        self.settings.stop_wait_max)
        return released

    async def _release(self, attempts: Any) -> int:
        """Clear the old attempt of the tasks waiting on `attempts` (a condition on them); queue the pending ones."""
        async with self.core.engine.begin() as conn:
            rows = (await conn.execute(update(Task).where(Task.stopping_attempt_id == Attempt.id, attempts)
                                       .values(stopping_attempt_id=None).returning(*Task.__table__.c))).all()
        await self._index([r for r in rows if r.status == TaskStatus.PENDING])
        return len(rows)

    # -- operator actions -------------------------------------------------------------------------------

    async def act(self, action: Action, ids: Sequence[uuid.UUID], actor: str, single: bool = False,
                  attempt_id: uuid.UUID | None = None) -> ActionResult:
        """Cancel, retry or requeue tasks; only tasks in a state the action allows change.

        With `single`, a task that cannot change raises (404 / 409) instead of being skipped. With `attempt_id`
        (the attempt the operator was looking at) a task changes only while that is still its attempt, so an
        action aimed at one attempt never hits the next. Any number of ids: they change in transactions of
        ACTION_CHUNK, each safe to repeat.
        """
        result = ActionResult()
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), ACTION_CHUNK):
            chunk = unique[start:start + ACTION_CHUNK]
            changed = await self._act_on(action, chunk, actor, single, attempt_id, len(unique))
            result.changed += changed
            result.skipped += len(chunk) - len(changed)
        return result

    async def _act_on(self, action: Action, ids: Sequence[uuid.UUID], actor: str, single: bool,
                      attempt_id: uuid.UUID | None, total: int) -> list[uuid.UUID]:
        cond = and_(Task.id.in_(ids), Task.status.in_([s.value for s in ALLOWED_FROM[action]]))
        if action == Action.REQUEUE:  # a queued task is already where requeue would put it
            cond = and_(cond, or_(Task.status == TaskStatus.RUNNING.value, Task.available_at.is_not(None)))
        if attempt_id is not None:
            cond = and_(cond, Task.attempt_id == attempt_id)
        async with self.core.engine.begin() as conn:
            rows = (await conn.execute(select(Task.id, Task.status, Task.worker_id, Task.attempt_id, Task.service,
                                              Task.started_at).where(cond).with_for_update())).all()
            if single and not rows:
                await self._refuse(conn, ids[0], action, attempt_id)
            if rows:
                await {Action.CANCEL: self._cancel, Action.RETRY: self._retry,
                       Action.REQUEUE: self._requeue}[action](conn, rows)
            target = str(ids[0]) if total == 1 else f"{total} tasks"
            await write_audit(conn, actor, f"task.{action.value}", target, len(rows),
                              {"skipped": len(ids) - len(rows)})
            if rows:  # each task's timeline says who did it: one statement for the whole chunk
                await conn.execute(RECORD_ACTION, {"ids": [r.id for r in rows], "kind": action.value, "actor": actor,
                                                   "from": [r.status for r in rows],
                                                   "attempts": [str(r.attempt_id or "") for r in rows]})
        self._count_action(action, rows)
        changed = [r.id for r in rows]
        await self.core.resync(changed)
        return changed

    def _count_action(self, action: Action, rows: Sequence[Any]) -> None:
        """Count a committed operator action: cancels finish tasks, retries retry them, and the running attempts
        a cancel or requeue ended count their run time."""
        metrics, now = self.core.metrics, utcnow()
        reason = EndReason.CANCELLED if action == Action.CANCEL else EndReason.REQUEUED
        for row in rows:
            if action == Action.CANCEL:
                metrics.finished.labels(row.service, TaskStatus.CANCELLED.value).inc()
            elif action == Action.RETRY:
                metrics.retried.labels(row.service, "operator").inc()
            if row.status == TaskStatus.RUNNING and action != Action.RETRY and row.started_at is not None:
                metrics.run_time.labels(row.service, reason.value).observe(
                    max(0.0, (now - row.started_at).total_seconds()))

    @staticmethod
    async def _refuse(conn: AsyncConnection, task_id: uuid.UUID, action: Action, attempt_id: uuid.UUID | None) -> None:
        """Raise the error that says why `action` left this task as it was."""
        row = (await conn.execute(select(Task.status, Task.attempt_id).where(Task.id == task_id))).first()
        if row is None:
            raise TaskNotFound(str(task_id))
        if attempt_id is not None and row.attempt_id != attempt_id:
            raise StaleAttempt(str(task_id), str(attempt_id))
        queued_now = action == Action.REQUEUE and row.status == TaskStatus.PENDING
        raise IllegalTransition(str(task_id), "pending and already queued" if queued_now else row.status,
                                action.value)

    async def _cancel(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        await self._stop_running(conn, rows, EndReason.CANCELLED)
        await conn.execute(update(Task).where(Task.id.in_([r.id for r in rows])).values(
            status=TaskStatus.CANCELLED.value, end_reason=EndReason.CANCELLED.value, finished_at=utcnow(),
            updated_at=utcnow()))

    async def _requeue(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        await self._stop_running(conn, rows, EndReason.REQUEUED)
        await conn.execute(update(Task).where(Task.id.in_([r.id for r in rows])).values(
            status=TaskStatus.PENDING.value, available_at=None, updated_at=utcnow()))

    async def _retry(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        await conn.execute(update(Task).where(Task.id.in_([r.id for r in rows])).values(
            status=TaskStatus.PENDING.value, available_at=None, retry_count=0, worker_losses=0, error=None,
            result=None, end_reason=None, finished_at=None, progress=None, updated_at=utcnow()))

    async def _stop_running(self, conn: AsyncConnection, rows: Sequence[Any], reason: EndReason) -> None:
        """Close the current attempts of running rows; the tasks wait until their workers have killed them."""
        running = [r for r in rows if r.status == TaskStatus.RUNNING]
        if not running:
            return
        await conn.execute(update(Attempt).where(Attempt.id.in_([r.attempt_id for r in running]))
                           .where(Attempt.ended_at.is_(None)).values(ended_at=utcnow(), end_reason=reason.value))
        await conn.execute(update(Task).where(Task.id == bindparam("t_id")).values(
            stopping_attempt_id=bindparam("t_attempt")), [{"t_id": r.id, "t_attempt": r.attempt_id} for r in running])
        await self._kill(conn, running)

    async def _kill(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        """Tell the workers of these attempts to kill them (a command, delivered until acknowledged)."""
        await send_commands(conn, [(r.worker_id, CommandKind.CANCEL_TASK,
                                    {"task_id": str(r.id), "attempt_id": str(r.attempt_id)})
                                   for r in rows if r.worker_id], self.core)

    # -- the index follows ----------------------------------------------------------------------------

    async def _index(self, tasks: Sequence[Any]) -> None:
        """Put tasks PostgreSQL now holds pending (queued, backing off, or waiting for an old attempt) into the
        index, and drop those it holds finished."""
        retry = [queued(t) for t in tasks if t.status == TaskStatus.PENDING]
        await self.core.index.put_pending(retry)
        for status in (TaskStatus.FAILED, TaskStatus.TIMEOUT):
            await self.core.index.finish(status, [str(t.id) for t in tasks if t.status == status])
        if retry:
            await self.core.waker.wake_all()
