"""Helpers shared by the coordinator tests: task bodies, scripted agents (in-process and over HTTP), polling."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from redis import Redis as SyncRedis
from sqlalchemy import func, select

from coordinator.config import Settings
from coordinator.models import Attempt
from coordinator.schemas import Heartbeat, LeaseRequest, TaskEvent, TaskSpec, WorkerRegistration
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from coordinator.states import Action, TaskStatus
from tests.support.tasks import task_body

T = TypeVar("T")


async def submit(coordinator: Coordinator, count: int = 1, **fields: Any) -> list[str]:
    """Submit `count` identical tasks in one call (in order); returns their ids."""
    specs = [TaskSpec.model_validate(task_body(**fields)) for _ in range(count)]
    return [str(i) for i in (await coordinator.tasks.submit(specs, actor="test")).ids]


async def submit_one(coordinator: Coordinator, **fields: Any) -> str:
    """Submit one task; returns its id."""
    return (await submit(coordinator, 1, **fields))[0]


async def status_of(coordinator: Coordinator, task_id: str) -> str:
    """The task's status as PostgreSQL records it."""
    return str((await coordinator.tasks.get(uuid.UUID(task_id)))["status"])


async def attempt_counts(coordinator: Coordinator, task_ids: Iterable[str]) -> dict[str, int]:
    """Attempts recorded in PostgreSQL per task (tasks without any are left out)."""
    ids = [uuid.UUID(i) for i in task_ids]
    async with coordinator.core.engine.connect() as conn:
        rows = (await conn.execute(select(Attempt.task_id, func.count()).where(Attempt.task_id.in_(ids))
                                   .group_by(Attempt.task_id))).all()
    return {str(task_id): int(n) for task_id, n in rows}


@dataclass
class Agent:
    """A node agent scripted through the coordinator service (no HTTP)."""

    coordinator: Coordinator
    id: uuid.UUID
    token: str

    @classmethod
    async def register(cls, coordinator: Coordinator, hostname: str = "node", **fields: Any) -> Agent:
        reply = await coordinator.workers.register(WorkerRegistration.model_validate({"hostname": hostname,
                                                                                       **fields}))
        return cls(coordinator, uuid.UUID(reply["id"]), reply["token"])

    async def lease(self, max_tasks: int = 1, **ask: Any) -> list[dict[str, Any]]:
        """Lease without waiting; returns the leased tasks (each with task_id, attempt_id, gpus)."""
        return await self.coordinator.workers.lease(self.id, LeaseRequest(max_tasks=max_tasks, **ask))

    async def lease_ids(self, max_tasks: int = 1, **ask: Any) -> list[str]:
        """The ids of the tasks one lease hands out, in the order given."""
        return [t["task_id"] for t in await self.lease(max_tasks, **ask)]

    async def report(self, leased: dict[str, Any], event: str = "succeeded", **fields: Any) -> bool:
        """Report one event about a leased attempt; True when the coordinator accepted it."""
        ev = TaskEvent.model_validate({"task_id": leased["task_id"], "attempt_id": leased["attempt_id"],
                                       "event": event, **fields})
        return (await self.coordinator.workers.report(self.id, [ev]))[0]

    async def heartbeat(self, *current_tasks: str) -> dict[str, Any]:
        """A legacy flat heartbeat naming the tasks this agent believes it runs."""
        return await self.coordinator.workers.heartbeat(self.id, Heartbeat(current_tasks=list(current_tasks)))

    async def confirm_stopped(self) -> int:
        """Acknowledge every cancel-task command, as an agent does once the attempt's process is gone; returns
        how many."""
        kills = [c["id"] for c in await self.coordinator.workers.commands(self.id) if c["command"] == "cancel-task"]
        return await self.coordinator.workers.ack(self.id, kills) if kills else 0

    async def status(self) -> str:
        """The worker's live status."""
        return str((await self.coordinator.workers.get(self.id))["status"])


@dataclass(frozen=True)
class Driven:
    """A task brought into a given state, with the agent that ran it (when it ran)."""

    task_id: str
    agent: Agent
    leased: dict[str, Any] | None


DRIVE_DEFAULTS: dict[TaskStatus, dict[str, Any]] = {TaskStatus.TIMEOUT: {"max_retries": 0}}
"""Task fields a state needs to be reached in one attempt (a timed-out attempt with no retries left)."""


async def drive_to(coordinator: Coordinator, status: TaskStatus, **fields: Any) -> Driven:
    """Submit a task and bring it into `status` the way real traffic does.

    Each task gets a group and an agent of its own, so leases never pick up another test task.
    """
    group = f"g{uuid.uuid4().hex[:12]}"
    agent = await Agent.register(coordinator, hostname=f"host-{group}", groups=[group], cpu_cores=8)
    task_id = await submit_one(coordinator, group=group, **{**DRIVE_DEFAULTS.get(status, {}), **fields})
    leased: dict[str, Any] | None = None
    if status == TaskStatus.CANCELLED:
        await coordinator.lifecycle.act(Action.CANCEL, [uuid.UUID(task_id)], "test", single=True)
    elif status != TaskStatus.PENDING:
        [leased] = await agent.lease()
        assert leased["task_id"] == task_id
        if status == TaskStatus.SUCCEEDED:
            assert await agent.report(leased, "succeeded", result={"ok": True})
        elif status == TaskStatus.FAILED:
            assert await agent.report(leased, "failed", reason="permanent", error="bad SMILES", exit_code=2)
        elif status == TaskStatus.TIMEOUT:
            assert await agent.report(leased, "failed", reason="timeout", error="too slow")
    return Driven(task_id, agent, leased)


async def drive_all(coordinator: Coordinator, **fields: Any) -> dict[TaskStatus, Driven]:
    """One task in every state."""
    return {s: await drive_to(coordinator, s, **fields) for s in TaskStatus}


def configured(settings: Settings, **overrides: Any) -> Settings:
    """The settings with some values changed, validated (env forms such as `api_keys="role:key,..."` parse)."""
    return Settings.model_validate({**settings.model_dump(), **overrides})


@contextlib.asynccontextmanager
async def started(settings: Settings, timers: bool = False, **overrides: Any) -> AsyncIterator[Coordinator]:
    """A coordinator of its own on the test's stores (timers off unless asked), with some settings changed."""
    service = Coordinator.build(configured(settings, **overrides))
    await service.start(timers=timers)
    try:
        yield service
    finally:
        await service.stop()


@contextlib.contextmanager
def serving(settings: Settings, **overrides: Any) -> Iterator[tuple[BackgroundServer, httpx.Client]]:
    """The real API on a free loopback port with some settings changed, and a keyless client on it."""
    server = BackgroundServer(configured(settings, port=0, **overrides), timers=False).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield server, client
    finally:
        server.stop()


def wipe_index(redis: SyncRedis, prefix: str) -> int:
    """Delete every Redis key of one prefix (a FLUSHALL that spares tests sharing the server)."""
    keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
    return int(redis.delete(*keys)) if keys else 0
