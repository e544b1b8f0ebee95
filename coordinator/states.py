"""Task and worker states, the allowed transitions between task states, and which reasons an attempt ends for retry.

`TRANSITIONS` is the one table of which task state may follow which; `coordinator.lifecycle` makes every
change through it, and PostgreSQL holds the states themselves (a CHECK constraint on `tasks.status`).
"""

from __future__ import annotations

from enum import StrEnum

from aiddwire import EndReason


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def finished(self) -> bool:
        """Whether no attempt will run unless an operator retries it."""
        return self in FINISHED


FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMEOUT})

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # leased; cancelled; requeued again while it waits out a backoff (back to the head of its queue)
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.PENDING,
                                   TaskStatus.TIMEOUT}),  # timeout: waited past its max_wait_s
    # its attempt succeeded, failed, timed out or was cancelled; or it goes back to the queue (a retry, a
    # requeue, a lost worker, a hand-back)
    TaskStatus.RUNNING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED,
                                   TaskStatus.PENDING}),
    **{done: frozenset({TaskStatus.PENDING}) for done in FINISHED},  # an operator's retry
}
"""Which states each state may change to; every other change is an `IllegalTransition`."""


def sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The states a task may be in to change to `target` (what a conditional UPDATE's WHERE allows)."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


class WorkerStatus(StrEnum):
    """Whether a worker takes tasks."""

    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"


RETRYABLE = frozenset({EndReason.ERROR, EndReason.TIMEOUT, EndReason.WORKER_LOST})
"""End reasons a task retries on by default (`retry_on`)."""


class Action(StrEnum):
    """Operator actions on a task."""

    CANCEL = "cancel"
    RETRY = "retry"
    REQUEUE = "requeue"


ALLOWED_FROM: dict[Action, frozenset[TaskStatus]] = {
    Action.CANCEL: sources(TaskStatus.CANCELLED),
    Action.RETRY: sources(TaskStatus.PENDING) & FINISHED,
    Action.REQUEUE: sources(TaskStatus.PENDING) - FINISHED,
}
"""The states each operator action may start from (read off `TRANSITIONS`): cancel leads to `cancelled`, retry
and requeue to `pending`."""


class ReasonCode(StrEnum):
    """Why a pending task is not running, as a word for filters and scripts (`?pending_reason=busy`)."""

    PAUSED = "paused"
    """Its service is paused in the service registry (`aidd services NAME --resume`)."""
    SERVICE_LIMIT = "service_limit"
    """Its service runs as many tasks as its limit allows."""
    STOPPING = "stopping"
    """An attempt the coordinator ended may still run on its worker: the task waits until it is gone."""
    BACKOFF = "backoff"
    """Waiting out the retry backoff after a failed attempt."""
    NO_GROUP = "no_group"
    """No online worker in the task's group."""
    NO_SERVICE = "no_service"
    """Online workers in the group, none of which serves the task's service."""
    NO_LABELS = "no_labels"
    """No online worker of the group and service has the labels the task requires."""
    TOO_BIG = "too_big"
    """No online worker has the cores, memory, GPUs or GPU memory the task asks for, even when idle."""
    BUSY = "busy"
    """Workers fit the task but all are busy or draining."""
    PRIORITY = "priority"
    """Like busy, and tasks of higher priority are ahead of it (decided per task)."""
    READY = "ready"
    """A fitting worker has room: the task starts at that worker's next lease."""


DROPPED_STREAM = "dropped"
"""The stream of the marker line standing where the per-attempt log cap dropped lines (never sent by agents)."""
