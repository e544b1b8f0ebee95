"""Retention of finished tasks on real PostgreSQL: old finished tasks go with their attempts, logs, files and
empty batches; recent and unfinished ones stay, whatever their age; old pending reasons of queue shapes go."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from coordinator import retention
from coordinator.core import utcnow
from coordinator.models import Attempt, Batch, PendingReasonChange, Task, TaskLog
from coordinator.retention import Retention
from coordinator.schemas import TaskSpec
from coordinator.service import Coordinator
from coordinator.states import FINISHED, TaskStatus
from coordinator.storage.names import input_key
from tests.helpers import drive_to, submit_one
from tests.support.tasks import task_body

pytestmark = pytest.mark.anyio


def test_the_dashboard_names_the_window(client: httpx.Client) -> None:
    assert client.get("/api/v1/stats/dashboard").json()["retention"] == {"task_days": 90, "file_days": 30}


async def _age(coordinator: Coordinator, task_id: str, days: float) -> uuid.UUID:
    """Make a task `days` old (finished then, if it has finished), give it two log lines and a stored file."""
    tid = uuid.UUID(task_id)
    then = utcnow() - timedelta(days=days)
    async with coordinator.core.engine.begin() as conn:
        await conn.execute(update(Task).where(Task.id == tid).values(created_at=then))
        await conn.execute(update(Task).where(Task.id == tid, Task.finished_at.is_not(None))
                           .values(finished_at=then))
        attempt = (await conn.execute(select(Attempt.id).where(Attempt.task_id == tid))).scalar()
        if attempt is not None:
            await conn.execute(insert(TaskLog), [{"task_id": tid, "attempt_id": attempt, "line": f"line {i}"}
                                                 for i in range(2)])
        await conn.execute(update(Task).where(Task.id == tid).values(input_files=[input_key(tid, "in.smi")]))
    await asyncio.to_thread(coordinator.files.store.put, input_key(tid, "in.smi"), io.BytesIO(b"CCO"), 100)
    return tid


async def _left(coordinator: Coordinator, tid: uuid.UUID) -> tuple[int, int, int, int]:
    """(task rows, attempts, log lines, stored files) of one task."""
    async with coordinator.core.engine.connect() as conn:
        counts = [int((await conn.execute(select(func.count()).select_from(table).where(column == tid))).scalar()
                      or 0) for table, column in ((Task, Task.id), (Attempt, Attempt.task_id),
                                                   (TaskLog, TaskLog.task_id))]
    files = await asyncio.to_thread(coordinator.files.store.list_objects, f"tasks/{tid}/")
    return counts[0], counts[1], counts[2], len(files)


async def test_old_finished_tasks_go_recent_and_unfinished_stay(coordinator: Coordinator,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "RETENTION_BATCH", 2)  # several batches
    old = [await _age(coordinator, (await drive_to(coordinator, status)).task_id, 91) for status in FINISHED]
    recent = await _age(coordinator, (await drive_to(coordinator, TaskStatus.SUCCEEDED)).task_id, 89)
    pending = await _age(coordinator, (await drive_to(coordinator, TaskStatus.PENDING)).task_id, 400)
    running = await _age(coordinator, (await drive_to(coordinator, TaskStatus.RUNNING)).task_id, 400)
    for tid in old:
        assert (await _left(coordinator, tid))[0] == 1
    referenced = old[0]
    await submit_one(coordinator, input_files=[input_key(referenced, "in.smi")])  # a new task reads its input

    assert await coordinator.timers.retention.run() == len(FINISHED)

    for tid in old:
        rows, attempts, logs, files = await _left(coordinator, tid)
        assert (rows, attempts, logs) == (0, 0, 0), tid
        assert files == (1 if tid == referenced else 0), tid
    assert await _left(coordinator, recent) == (1, 1, 2, 1)
    assert (await _left(coordinator, pending))[0] == 1
    assert await _left(coordinator, running) == (1, 1, 2, 1)
    assert await coordinator.timers.retention.run() == 0


async def test_empty_old_batches_go_with_their_tasks(coordinator: Coordinator) -> None:
    specs = [TaskSpec.model_validate(task_body()) for _ in range(2)]
    emptied = (await coordinator.tasks.submit(specs, batch_name="old screen")).batch_id
    kept = (await coordinator.tasks.submit(specs, batch_name="mixed")).batch_id
    async with coordinator.core.engine.begin() as conn:
        long_ago = utcnow() - timedelta(days=100)
        await conn.execute(update(Batch).values(created_at=long_ago))
        await conn.execute(update(Task).where(Task.batch_id == emptied).values(
            status="cancelled", finished_at=long_ago))
        first = (await conn.execute(select(Task.id).where(Task.batch_id == kept).limit(1))).scalar()
        await conn.execute(update(Task).where(Task.id == first).values(status="cancelled", finished_at=long_ago))
    assert await coordinator.timers.retention.run() == 3
    async with coordinator.core.engine.connect() as conn:
        batches = set((await conn.execute(select(Batch.id))).scalars())
    assert batches == {kept}


async def test_old_pending_reasons_go_but_each_shapes_last(coordinator: Coordinator) -> None:
    """Reasons recorded before the window go, except the latest of a watched shape (still in force); a shape no
    longer watched (its last row has no code) goes whole."""
    long_ago, recent = utcnow() - timedelta(days=100), utcnow() - timedelta(days=1)
    rows = [("a", "no_group", long_ago - timedelta(hours=1)), ("a", "too_big", long_ago),
            ("b", "no_group", long_ago - timedelta(hours=1)), ("b", "busy", long_ago), ("b", "ready", recent),
            ("c", "busy", long_ago - timedelta(hours=1)), ("c", None, long_ago)]
    async with coordinator.core.engine.begin() as conn:
        await conn.execute(insert(PendingReasonChange), [{"shape_key": key, "code": code, "message": "", "at": at}
                                                         for key, code, at in rows])
    await coordinator.timers.retention.run()
    async with coordinator.core.engine.connect() as conn:
        left = (await conn.execute(select(PendingReasonChange.shape_key, PendingReasonChange.code)
                                   .order_by(PendingReasonChange.id))).all()
    assert [tuple(r) for r in left] == [("a", "too_big"), ("b", "ready")]


async def test_zero_keeps_everything(coordinator: Coordinator) -> None:
    tid = await _age(coordinator, (await drive_to(coordinator, TaskStatus.FAILED)).task_id, 4000)
    forever = coordinator.core.settings.model_copy(update={"task_retention_days": 0})
    assert await Retention(dataclasses.replace(coordinator.core, settings=forever), coordinator.files).run() == 0
    assert await _left(coordinator, tid) == (1, 1, 2, 1)


async def test_the_leader_runs_it_from_its_timers(coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file expiry, started by the same tick, share-locks the rows whose files it deletes, and a retention run
    # skips rows others hold (the next run takes them): off here, so this run has the task to itself.
    monkeypatch.setattr(coordinator.core.settings, "file_retention_days", 0)
    tid = await _age(coordinator, (await drive_to(coordinator, TaskStatus.SUCCEEDED)).task_id, 120)
    await coordinator.timers.tick()
    for _ in range(100):
        if (await _left(coordinator, tid))[0] == 0:
            break
        await asyncio.sleep(0.05)
    assert await _left(coordinator, tid) == (0, 0, 0, 0)
