"""What every part of the coordinator shares: settings, the PostgreSQL engine, Redis and the queue index."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aiddwire import CommandKind
from coordinator.config import Settings
from coordinator.keys import Keys
from coordinator.metrics import Metrics
from coordinator.models import AuditRecord, Task, WorkerCommand
from coordinator.queue import QueuedTask, QueueIndex, RunningTask
from coordinator.states import TaskStatus
from coordinator.wakeup import Waker


def utcnow() -> datetime:
    """Timezone-aware now, as stored in PostgreSQL."""
    return datetime.now(UTC)


log = logging.getLogger(__name__)
STOPPING_DUE_MS = 2**52
"""Due time (ms) of a task waiting for its old attempt to stop: never, until `lifecycle` releases it."""
RESYNC_CHUNK = 5000
"""Tasks read from PostgreSQL at a time when rewriting their index entries."""


def queued(row: Any) -> QueuedTask:
    """The index entry of a pending task row (any object with the Task columns as attributes): queued, delayed
    until its backoff is over, or parked while an old attempt of it is stopping."""
    due = row.available_at
    due_ms = STOPPING_DUE_MS if row.stopping_attempt_id else int(due.timestamp() * 1000) if due else 0
    return QueuedTask(id=str(row.id), service=row.service, group=row.group, priority=row.priority,
                      seq=row.seq, labels=row.labels, cpu=row.cpu, memory_gb=row.memory_gb, gpu=row.gpu,
                      gpu_memory_gb=row.gpu_memory_gb, due_ms=due_ms)


@dataclass
class Core:
    """Shared handles; the task and worker services are built on one of these."""

    settings: Settings
    engine: AsyncEngine
    statements: AsyncEngine
    """The same pool as `engine`, without transactions: for a write that is one statement (see `db.pooled_engine`:
    two round trips fewer)."""
    redis: Redis
    keys: Keys
    index: QueueIndex
    metrics: Metrics = field(default_factory=Metrics)
    """This process's Prometheus metrics: every part counts what it does here."""
    waker: Waker = field(init=False)
    """Wakes the long-polling leases (started and stopped with the coordinator)."""

    def __post_init__(self) -> None:
        self.waker = Waker(self.redis, self.keys.wakeup, self.metrics)

    async def resync(self, task_ids: Iterable[uuid.UUID | str]) -> None:
        """Rewrite the index entries of these tasks from PostgreSQL, which is always right.

        A transition may commit between the read and the write, and its own index write may land before ours,
        which would leave ours stale: the tasks whose placement changed meanwhile are rewritten again.
        """
        ids = [uuid.UUID(str(i)) for i in task_ids]
        for _ in range(RESYNC_ROUNDS):
            if not ids:
                return
            written = await self._rewrite(ids)
            now = await self.placements(ids)
            ids = [i for i in ids if now.get(i) != written.get(i)]
        if ids:
            log.warning("index entries of %d task(s) kept changing while rewritten; the drift check repairs them",
                        len(ids))

    async def _rewrite(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
        """Write the index entries of these tasks as PostgreSQL has them; returns the placements written."""
        rows: list[Any] = []
        async with self.engine.connect() as conn:
            for start in range(0, len(ids), RESYNC_CHUNK):
                rows += (await conn.execute(select(Task).where(Task.id.in_(ids[start:start + RESYNC_CHUNK])))).all()
        pending = [queued(r) for r in rows if r.status == TaskStatus.PENDING]
        running = [RunningTask(str(r.id), r.service, r.group, str(r.worker_id), str(r.attempt_id), r.gpus)
                   for r in rows if r.status == TaskStatus.RUNNING]
        await self.index.put_pending(pending)
        await self.index.put_running(running)
        for status in (s for s in TaskStatus if s.finished):
            await self.index.finish(status, [str(r.id) for r in rows if r.status == status], remember=False)
        known = {r.id for r in rows}
        await self.index.finish(TaskStatus.CANCELLED, [str(i) for i in ids if i not in known], remember=False)
        if pending:
            await self.waker.wake_all()
        return {r.id: _placement(r) for r in rows}

    async def placements(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
        """What decides these tasks' index entries now (PLACEMENT: status, attempt, due time, old attempt stopping);
        tasks PostgreSQL no longer has are left out."""
        found: dict[uuid.UUID, tuple[Any, ...]] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(ids), RESYNC_CHUNK):
                rows = (await conn.execute(select(Task.id, *PLACEMENT).where(
                    Task.id.in_(ids[start:start + RESYNC_CHUNK])))).all()
                found.update({r.id: _placement(r) for r in rows})
        return found


PLACEMENT = (Task.status, Task.attempt_id, Task.available_at, Task.stopping_attempt_id)
"""The columns that decide where a task is in the index."""
RESYNC_ROUNDS = 3


def _placement(row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, column.key) for column in PLACEMENT)


async def write_audit(conn: AsyncConnection, actor: str, action: str, target: str, count: int,
                      detail: dict[str, Any] | None = None) -> None:
    """Record an operator action (who, what, how many) in the same transaction as the action."""
    await conn.execute(insert(AuditRecord).values(actor=actor, action=action, target=target[:2000],
                                                  count=count, detail=detail or {}))


async def send_commands(conn: AsyncConnection,
                        commands: Sequence[tuple[uuid.UUID, CommandKind, dict[str, Any]]],
                        core: Core | None = None) -> None:
    """Store commands for workers; heartbeats deliver them until the agent acknowledges.

    With `core`, each worker's Redis hash also gets the `cmds` flag, so its next heartbeat looks them up
    (see `beats`); without it they still arrive, within `beats.RECHECK_S`.
    """
    if not commands:
        return
    await conn.execute(insert(WorkerCommand), [{"worker_id": w, "command": c, "args": a} for w, c, a in commands])
    if core is not None:
        flag = repr(time.time())
        async with core.redis.pipeline(transaction=False) as pipe:
            for worker in {w for w, _, _ in commands}:
                pipe.hset(core.keys.worker(str(worker)), "cmds", flag)
            await pipe.execute()
