"""The durable record in PostgreSQL (SQLAlchemy 2): tasks, attempts, workers, logs, commands, batches, audit,
task events, the service registry, the pending reasons of queue shapes over time."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coordinator.states import FINISHED, TaskStatus


class Base(DeclarativeBase):
    """Declarative base; the Alembic migrations in `migrations/` create exactly these tables."""

    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB, Any: JSONB}


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Batch(Base):
    """Tasks submitted together (a job array)."""

    __tablename__ = "batches"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _now()


class Task(Base):
    """One unit of work and its current state; `attempt_id` is the fencing token of the current attempt."""

    __tablename__ = "tasks"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), unique=True)
    service: Mapped[str] = mapped_column(String(100))
    task_type: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(500), default="")
    input_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=2)
    group: Mapped[str] = mapped_column("group", String(100), default="default")
    labels: Mapped[list[Any]] = mapped_column(default=list)
    cpu: Mapped[float] = mapped_column(Float, default=1.0)
    memory_gb: Mapped[float] = mapped_column(Float, default=0.0)
    gpu: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_memory_gb: Mapped[float] = mapped_column(Float, default=0.0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    timeout_s: Mapped[int] = mapped_column(Integer, default=300)
    max_wait_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Pending longer than this after submission, the task ends as timeout (no worker took it in time)."""
    retry_on: Mapped[list[Any]] = mapped_column(default=list)
    input_files: Mapped[list[Any]] = mapped_column(default=list)
    outputs: Mapped[list[Any]] = mapped_column(default=list)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(100), default="")
    exclusive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Never two attempts at once: its agent stops it when cut off long enough for the coordinator to requeue it."""

    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempt_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    stopping_attempt_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    """An attempt the coordinator ended (cancel, requeue, timeout) whose process may still run on its worker: the
    task is not leased again until that worker confirms it gone, or is lost (see `lifecycle`)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    worker_losses: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[Any | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_tasks_status_service", "status", "service"),
        Index("ix_tasks_batch", "batch_id"),
        Index("ix_tasks_created", "created_at"),
        Index("ix_tasks_finished", "finished_at"),
        Index("ix_tasks_worker_running", "worker_id", postgresql_where="status = 'running'"),
        Index("ix_tasks_stopping", "stopping_attempt_id", postgresql_where="stopping_attempt_id IS NOT NULL"),
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in TaskStatus)})", name="ck_tasks_status"),
        CheckConstraint("status <> 'running' OR (attempt_id IS NOT NULL AND worker_id IS NOT NULL)",
                        name="ck_tasks_running_has_attempt"),
        CheckConstraint(f"status NOT IN ({', '.join(repr(s.value) for s in FINISHED)}) OR finished_at IS NOT NULL",
                        name="ck_tasks_finished_at"),
    )


class Attempt(Base):
    """One run of a task on one worker; its id is the fencing token every agent call carries."""

    __tablename__ = "attempts"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    leased_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When the retry this attempt's end decided is due (None: no backoff followed it)."""
    log_dropped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Log lines of this attempt dropped by the per-attempt cap (a marker line stands where they were)."""


class Worker(Base):
    """A compute host running the node agent."""

    __tablename__ = "workers"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64))
    services: Mapped[list[Any]] = mapped_column(default=list)
    groups: Mapped[list[Any]] = mapped_column(default=list)
    labels: Mapped[list[Any]] = mapped_column(default=list)
    cpu_cores: Mapped[float] = mapped_column(Float, default=1.0)
    memory_gb: Mapped[float] = mapped_column(Float, default=0.0)
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="online")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agent_version: Mapped[str] = mapped_column(String(50), default="")
    registered_at: Mapped[datetime] = _now()
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TaskLog(Base):
    """One line of a task attempt's stdout / stderr."""

    __tablename__ = "task_logs"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt_id: Mapped[uuid.UUID] = mapped_column()
    ts: Mapped[datetime] = _now()
    stream: Mapped[str] = mapped_column(String(10), default="stdout")
    line: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_task_logs_task", "task_id", "id"), Index("ix_task_logs_attempt", "attempt_id", "id"))


class TaskAction(Base):
    """Something done to one task that its own columns and attempts do not keep: an operator's cancel, retry or
    requeue (who and when), written in the same transaction as the change; the task's timeline reads it."""

    __tablename__ = "task_events"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    at: Mapped[datetime] = _now()
    kind: Mapped[str] = mapped_column(String(30))
    actor: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_task_events_task", "task_id", "id"),)


class WorkerCommand(Base):
    """A command for one worker (drain, resume, cancel-task, shutdown), delivered by heartbeat until acked."""

    __tablename__ = "worker_commands"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    worker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"), index=True)
    command: Mapped[str] = mapped_column(String(30))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _now()
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditRecord(Base):
    """Who did what to how many tasks or workers, and when."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = _now()
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(Text, default="")
    count: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Service(Base):
    """A service's runtime settings, changed by operators while it runs: a paused service's tasks wait; at most
    `max_running` of its tasks run at once (NULL: the configured `service_limits`, else no limit). `number` is
    a stable integer id, the `model_id` of LLM-scheduler clients."""

    __tablename__ = "services"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, Identity(always=False), unique=True)
    paused: Mapped[bool] = mapped_column(Boolean, server_default=false())
    max_running: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (CheckConstraint("max_running IS NULL OR max_running >= 0", name="ck_services_max_running"),)


class PendingReasonChange(Base):
    """When the reason tasks of one queue shape wait changed (`pending.Shape`; the code is NULL once the shape has
    had no queued task for a while and is no longer watched). The leader writes a row per change, not per task or
    tick; a task's timeline reads its shape's rows while it waited."""

    __tablename__ = "pending_reason_changes"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    shape_key: Mapped[str] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(String(20), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_pending_reason_changes_shape", "shape_key", "at"),)
