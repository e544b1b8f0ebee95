"""Domain errors; each carries its context and its HTTP status (`status_code`; `api/http.py` writes the answer).

Imports nothing: the light CLI commands catch these without loading the server's libraries.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A bad configuration value; the message names the key and is shown to the operator as is."""


class EmbeddedError(Exception):
    """An embedded server could not be started (or restarted); str(e) is one operator-readable line."""


class AiddError(Exception):
    """Base of the coordinator's own errors; `str()` is one readable line."""

    status_code = 400


class TaskNotFound(AiddError):
    """No task has this id."""

    status_code = 404

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class WorkerNotFound(AiddError):
    """No worker has this id."""

    status_code = 404

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"worker {worker_id} not found")
        self.worker_id = worker_id


class WorkerNotOffline(AiddError):
    """Only an offline worker can be removed from the record."""

    status_code = 409

    def __init__(self, worker_id: str, status: str) -> None:
        super().__init__(f"worker {worker_id} is {status}: only an offline worker can be removed")
        self.worker_id, self.status = worker_id, status


class ServiceNotFound(AiddError):
    """No service has this name or number."""

    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"service {name} not found")


class BatchNotFound(AiddError):
    """No batch has this id."""

    status_code = 404

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id} not found")


class IllegalTransition(AiddError):
    """An operator action that the task's current state does not allow."""

    status_code = 409

    def __init__(self, task_id: str, status: str, action: str) -> None:
        super().__init__(f"cannot {action} task {task_id}: it is {status}")
        self.task_id, self.status, self.action = task_id, status, action


class StaleAttempt(AiddError):
    """A report for an attempt that is no longer the task's current one (the fencing check)."""

    status_code = 409

    def __init__(self, task_id: str, attempt_id: str) -> None:
        super().__init__(f"attempt {attempt_id} of task {task_id} is no longer current")
        self.task_id, self.attempt_id = task_id, attempt_id


class QueueFull(AiddError):
    """The service already holds its maximum of pending tasks."""

    status_code = 429

    def __init__(self, service: str, pending: int, limit: int, adding: int) -> None:
        super().__init__(
            f"queue of service {service!r} is full: {pending} pending + {adding} new > limit {limit}; "
            "retry later or raise max_pending_per_service"
        )


class TooManyQueues(AiddError):
    """A submission would open a queue past `max_queue_shapes` in its group: each claim reads every queue."""

    status_code = 429

    def __init__(self, group: str, queues: int, opening: int, limit: int) -> None:
        super().__init__(
            f"resources: group {group!r} holds tasks in {queues} queues of distinct labels and resources; "
            f"{opening} more would pass max_queue_shapes {limit}; ask for the resources of queued tasks, "
            "or retry once some have run"
        )
        self.field = "resources"


class InvalidInput(AiddError):
    """A request value the schema accepts but the coordinator does not (the field is named)."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Forbidden(AiddError):
    """The caller's key does not allow this action."""

    status_code = 403


class Unauthorized(AiddError):
    """No key, or a key the coordinator does not know."""

    status_code = 401


class Unavailable(AiddError):
    """Redis or PostgreSQL cannot be reached (or is too busy); the request can be retried."""

    status_code = 503
    retry_after = 1
    """Seconds a client should wait before trying again (the Retry-After header)."""


class StoresMismatch(ConfigError):
    """This coordinator's stores do not fit those its Redis prefix already serves (another database, another
    file store): refused at start, before the index is touched; the CLI shows it as one line and exits 2."""


class AmbiguousId(AiddError):
    """An id prefix that more than one task, batch or worker starts with."""

    status_code = 409

    def __init__(self, field: str, prefix: str, candidates: list[str], more: bool) -> None:
        listed = ", ".join(candidates) + (", ..." if more else "")
        super().__init__(f"{prefix!r} is the start of several ids: {listed}; give more of it")
        self.field, self.candidates = field, candidates
