"""What PostgreSQL and the Redis index say about some tasks, read at once (the state machine's invariants)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from coordinator.core import Core
from coordinator.models import Attempt, Task


@dataclass(frozen=True)
class Indexed:
    """Where the Redis index holds one task."""

    queued: bool
    """In the pending set and in its service queue."""
    delayed: bool
    running: bool
    worker: str | None
    """The worker whose task set holds it (several would be an error of its own)."""


@dataclass(frozen=True)
class StoreView:
    """The tasks' records, their attempts (numbers, how many have no end) and where the index holds each."""

    records: dict[str, dict[str, Any]]
    attempts: dict[str, tuple[list[int], int]]
    index: dict[str, Indexed]


async def read_stores(core: Core, task_ids: list[str], worker_ids: list[str]) -> StoreView:
    """Read the view of these tasks; `worker_ids` are the workers whose task sets are looked into."""
    ids = [uuid.UUID(i) for i in task_ids]
    async with core.engine.connect() as conn:
        rows = (await conn.execute(select(Task.id, Task.status, Task.attempts, Task.retry_count, Task.worker_losses,
                                          Task.attempt_id, Task.worker_id, Task.result, Task.error, Task.finished_at)
                                   .where(Task.id.in_(ids)))).all()
        attempt_rows = (await conn.execute(select(Attempt.task_id, Attempt.number, Attempt.ended_at)
                                           .where(Attempt.task_id.in_(ids)).order_by(Attempt.number))).all()
    attempts: dict[str, tuple[list[int], int]] = {}
    for a in attempt_rows:
        numbers, open_count = attempts.get(str(a.task_id), ([], 0))
        attempts[str(a.task_id)] = ([*numbers, a.number], open_count + (a.ended_at is None))
    keys = core.keys
    async with core.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.zscore(keys.pending, task_id)
            pipe.zscore(keys.delayed, task_id)
            pipe.sismember(keys.running, task_id)
            pipe.hget(keys.task(task_id), "queue")
            for worker in worker_ids:
                pipe.sismember(keys.worker_tasks(worker), task_id)
        replies = await pipe.execute()
    index: dict[str, Indexed] = {}
    width = 4 + len(worker_ids)
    for n, task_id in enumerate(task_ids):
        pending, delayed, running, queue, *member = replies[n * width:(n + 1) * width]
        in_queue = pending is not None and queue is not None and (await core.redis.zscore(queue, task_id)) is not None
        holders = [w for w, m in zip(worker_ids, member, strict=True) if m]
        assert len(holders) <= 1, f"task {task_id} is in the task sets of several workers: {holders}"
        index[task_id] = Indexed(in_queue, delayed is not None, bool(running), holders[0] if holders else None)
    return StoreView({str(r.id): dict(r._mapping) for r in rows}, attempts, index)
