"""Rebuild the Redis index from PostgreSQL (at start, after a FLUSHALL) and repair drift found later."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
from sqlalchemy import String, cast, select

from coordinator.core import Core, queued
from coordinator.models import Task, Worker
from coordinator.queue import RunningTask
from coordinator.services import ServiceRegistry
from coordinator.states import TaskStatus, WorkerStatus

log = logging.getLogger(__name__)
DRIFT_SLICE = 2000
"""Active tasks read from PostgreSQL at a time by the drift check."""
DRIFT_RECHECK_S = 0.5
"""How long the drift check's candidates get to settle before they are read again. The check reads PostgreSQL, then
Redis, over a while, and every transition writes one store and then the other: a task that changed meanwhile looks
drifted. While a 16-core host drained 15 000 tasks/s, every check found hundreds to thousands such tasks, warned
of them as drift and rewrote them all."""


async def rebuild_index(core: Core) -> dict[str, int]:
    """Write every pending and running task and every live worker into Redis; drop what PostgreSQL finished."""
    async with core.engine.connect() as conn:
        active = (await conn.execute(select(Task.id, Task.service, Task.group, Task.priority, Task.seq, Task.labels,
                                            Task.cpu, Task.memory_gb, Task.gpu, Task.gpu_memory_gb, Task.available_at,
                                            Task.stopping_attempt_id, Task.status, Task.worker_id, Task.attempt_id,
                                            Task.gpus)
                                     .where(Task.status.in_([TaskStatus.PENDING, TaskStatus.RUNNING])))).all()
        workers = (await conn.execute(select(Worker.id, Worker.status, Worker.services, Worker.groups, Worker.labels,
                                             Worker.gpus, Worker.cpu_cores)
                                      .where(Worker.status != WorkerStatus.OFFLINE.value))).all()
    pending = [queued(r) for r in active if r.status == TaskStatus.PENDING]
    running = [RunningTask(str(r.id), r.service, r.group, str(r.worker_id), str(r.attempt_id), r.gpus)
               for r in active if r.status == TaskStatus.RUNNING]
    await core.index.put_pending(pending)
    await core.index.put_running(running)
    queued_ids, running_ids = await core.index.active_ids()
    known = {str(r.id) for r in active}
    await core.resync(i for i in (queued_ids | running_ids) if i not in known)
    await core.index.drop_empty_queues()
    now = time.time()
    async with core.redis.pipeline(transaction=False) as pipe:
        for w in workers:
            route = {"services": w.services, "groups": w.groups, "labels": w.labels, "gpus": w.gpus,
                     "cpu_cores": w.cpu_cores}
            pipe.hsetnx(core.keys.worker(str(w.id)), "hb", now)  # a grace period after a flush
            pipe.hset(core.keys.worker(str(w.id)), mapping={"status": w.status, "route": orjson.dumps(route)})
            pipe.zadd(core.keys.heartbeats, {str(w.id): now}, nx=True)
        pipe.set(core.keys.index_built, now)
        await pipe.execute()
    await ServiceRegistry(core).publish()
    await core.waker.wake_all()
    counts = {"pending": len(pending), "running": len(running), "workers": len(workers)}
    log.info("index rebuilt from PostgreSQL: %s", counts)
    return counts


async def repair_drift(core: Core) -> int:
    """Compare the index with PostgreSQL and rewrite the tasks that differ, and drop registry entries of empty
    queues; a flushed index is rebuilt.

    Returns how many tasks were repaired.
    """
    if not await core.redis.exists(core.keys.index_built):
        counts = await rebuild_index(core)
        return counts["pending"] + counts["running"]
    # Ids as text (converting 10^5 UUIDs costs), read in slices with the loop free between them: one read of
    # every active task held the loop for 40-70 ms with 26 000 of them, a stall every heartbeat then waited out.
    pg_pending: set[str] = set()
    pg_running: set[str] = set()
    async with core.engine.connect() as conn:
        result = await conn.stream(select(cast(Task.id, String), Task.status).where(
            Task.status.in_([TaskStatus.PENDING, TaskStatus.RUNNING])).execution_options(yield_per=DRIFT_SLICE))
        async for rows in result.partitions():  # each slice is a fetch from the server: the loop runs meanwhile
            for task_id, status in rows:
                (pg_pending if status == TaskStatus.PENDING else pg_running).add(task_id)
    if dropped := await core.index.drop_empty_queues():
        log.warning("dropped %d registry entries of empty queues", dropped)
    redis_pending, redis_running = await core.index.active_ids()
    candidates = (pg_pending ^ redis_pending) | (pg_running ^ redis_running)
    drift = await _still_drifting(core, candidates) if candidates else set()
    if drift:
        log.warning("index drift on %d tasks; repairing from PostgreSQL", len(drift))
        await core.resync(drift)
    return len(drift)


async def _still_drifting(core: Core, candidates: set[str]) -> set[str]:
    """Those of the drift check's candidates whose index entry still differs from PostgreSQL after
    DRIFT_RECHECK_S: the drift that is not a transition caught between its two writes."""
    await asyncio.sleep(DRIFT_RECHECK_S)
    ids = list(candidates)
    status = {str(task_id): placement[0] for task_id, placement in
              (await core.placements([uuid.UUID(i) for i in ids])).items()}
    placed = await core.index.placed(ids)
    return {i for i in ids
            if placed[i] != (status.get(i) == TaskStatus.PENDING, status.get(i) == TaskStatus.RUNNING)}
