"""Task and worker states, the reasons an attempt ends, and the allowed operator transitions."""

from __future__ import annotations

from enum import StrEnum

from coordinator.errors import IllegalTransition


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


class WorkerStatus(StrEnum):
    """Whether a worker takes tasks."""

    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"


class EndReason(StrEnum):
    """Why an attempt ended; retries are decided on this."""

    SUCCEEDED = "succeeded"
    ERROR = "error"  # non-zero exit or an exception in a plugin
    PERMANENT = "permanent"  # the task said retrying cannot help (bad input)
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"


RETRYABLE = frozenset({EndReason.ERROR, EndReason.TIMEOUT, EndReason.WORKER_LOST})
"""End reasons a task retries on by default (`retry_on`)."""


class Action(StrEnum):
    """Operator actions on a task."""

    CANCEL = "cancel"
    RETRY = "retry"
    REQUEUE = "requeue"


ALLOWED_FROM: dict[Action, frozenset[TaskStatus]] = {
    Action.CANCEL: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING}),
    Action.RETRY: FINISHED,
    Action.REQUEUE: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING}),
}
"""The states each operator action may start from; every action leads to `pending` or `cancelled`."""


def check_transition(task_id: str, status: TaskStatus, action: Action) -> None:
    """Raise IllegalTransition when `action` is not allowed on a task in `status`."""
    if status not in ALLOWED_FROM[action]:
        raise IllegalTransition(task_id, status.value, action.value)
