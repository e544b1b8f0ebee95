"""Every Redis key the coordinator uses, built from one prefix (the README's key table is checked against this).

Redis is an index: everything here can be rebuilt from PostgreSQL (see `reconcile.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITY_MIN, PRIORITY_MAX = -10_000, 10_000
SEQ_SPAN = 10**11
"""Scores are `-priority * SEQ_SPAN + seq`: exact in a double for |priority| <= 10 000 and seq < 10**11."""


def queue_score(priority: int, seq: int) -> int:
    """Sorted-set score: higher priority first, then submission order (FIFO)."""
    return -priority * SEQ_SPAN + seq % SEQ_SPAN


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix (tests use a prefix of their own)."""

    prefix: str = "aidd"

    def task(self, task_id: str) -> str:
        """Hash: hot copy of a task (status, attempt, routing and resource fields)."""
        return f"{self.prefix}:tasks:{task_id}"

    @property
    def pending(self) -> str:
        """Sorted set: every pending task that can run now; score orders priority then FIFO."""
        return f"{self.prefix}:queue:pending"

    def service_queue(self, service: str, group: str, needs: str = "") -> str:
        """Sorted set: pending tasks of one service and group that need the same labels and resources (`needs`,
        e.g. `a100+*cpu=4+*gpu=1`; empty for one-CPU tasks without labels). Workers skip the queues whose needs
        they lack."""
        return f"{self.prefix}:queue:service:{service}:{group}" + (f":{needs}" if needs else "")

    def queues(self, group: str) -> str:
        """Hash: the service queues of one group that hold tasks: key -> "service\\tneeds". A claim reads only
        its worker's groups, and a queue leaves when its last task does (a delayed task registers it again when
        it comes due), so old resource shapes and other groups cost a claim nothing."""
        return f"{self.prefix}:queues:{group}"

    @property
    def queue_groups(self) -> str:
        """Set: the groups whose registry (`queues`) holds a queue, for what reads every group (pending counts)."""
        return f"{self.prefix}:queue:groups"

    @property
    def delayed(self) -> str:
        """Sorted set: tasks waiting out a retry backoff; score is the ms timestamp they are due."""
        return f"{self.prefix}:queue:delayed"

    @property
    def running(self) -> str:
        """Set: running task ids."""
        return f"{self.prefix}:queue:running"

    @property
    def completed(self) -> str:
        """List: the most recent finished task ids (newest first, last 1000)."""
        return f"{self.prefix}:queue:completed"

    @property
    def failed(self) -> str:
        """List: the most recent failed / timed-out task ids (newest first, last 1000)."""
        return f"{self.prefix}:queue:failed"

    def running_of(self, service: str) -> str:
        """Set: running task ids of one service (per-service concurrency limits)."""
        return f"{self.prefix}:queue:running:{service}"

    @property
    def service_limits(self) -> str:
        """Hash: service -> maximum running tasks."""
        return f"{self.prefix}:config:service_limits"

    @property
    def paused_services(self) -> str:
        """Set: services whose tasks wait (the service registry's pause)."""
        return f"{self.prefix}:config:paused_services"

    @property
    def counters(self) -> str:
        """Hash: event counters (submitted, leased, succeeded, failed, ...) since the index was built."""
        return f"{self.prefix}:stats:counters"

    def worker(self, worker_id: str) -> str:
        """Hash: a worker's status and last heartbeat."""
        return f"{self.prefix}:workers:{worker_id}"

    def worker_tasks(self, worker_id: str) -> str:
        """Set: ids of the tasks running on one worker."""
        return f"{self.prefix}:workers:{worker_id}:tasks"

    @property
    def heartbeats(self) -> str:
        """Sorted set: worker id -> time of its last heartbeat (s); the checker reads the oldest."""
        return f"{self.prefix}:workers:heartbeats"

    @property
    def wakeup(self) -> str:
        """Pub/sub channel: published on each submission so long-polling leases look again."""
        return f"{self.prefix}:events:wakeup"

    @property
    def leader(self) -> str:
        """String with expiry: id of the coordinator process that runs the timers (the reaper lease)."""
        return f"{self.prefix}:leader"

    @property
    def index_built(self) -> str:
        """String: when the index was last rebuilt from PostgreSQL (absent after a FLUSHALL)."""
        return f"{self.prefix}:meta:index_built"

    @property
    def database(self) -> str:
        """String: `system_identifier/name` of the PostgreSQL database the index belongs to; a coordinator on
        another database refuses to start instead of rebuilding the index from its own record (`peers.py`)."""
        return f"{self.prefix}:meta:database"

    @property
    def coordinators(self) -> str:
        """Hash: coordinator instance -> JSON (host, pid, file store, last seen) while it runs; a start with
        another file store than a live one is refused (`peers.py`)."""
        return f"{self.prefix}:coordinators"


KEY_TABLE: list[tuple[str, str, str]] = [
    ("{p}:tasks:{id}", "hash", "hot copy of a task"),
    ("{p}:queue:pending", "sorted set", "all pending tasks that can run now; score = -priority*1e11 + seq"),
    ("{p}:queue:service:{service}:{group}[:{needs}]", "sorted set",
     "pending tasks of one service and group; tasks needing labels or other resources than one CPU queue apart "
     "(needs = a100+*cpu=4+*mem=16+*gpu=1)"),
    ("{p}:queues:{group}", "hash", "service queues of one group that hold tasks: queue key -> service and needs"),
    ("{p}:queue:groups", "set", "groups with a queue that holds tasks"),
    ("{p}:queue:delayed", "sorted set", "tasks in retry backoff; score = due time (ms)"),
    ("{p}:queue:running", "set", "running tasks"),
    ("{p}:queue:completed", "list", "recent finished tasks (last 1000)"),
    ("{p}:queue:failed", "list", "recent failed / timed-out tasks (last 1000)"),
    ("{p}:queue:running:{service}", "set", "running tasks of one service (concurrency limits)"),
    ("{p}:stats:counters", "hash", "event counters"),
    ("{p}:config:service_limits", "hash", "per-service running limit"),
    ("{p}:config:paused_services", "set", "paused services: their tasks wait"),
    ("{p}:workers:{id}", "hash", "worker status, last heartbeat, readings, when each GPU was last busy"),
    ("{p}:workers:{id}:tasks", "set", "tasks running on a worker"),
    ("{p}:workers:heartbeats", "sorted set", "worker -> last heartbeat time"),
    ("{p}:events:wakeup", "pub/sub channel", "wakes long-polling leases on submission"),
    ("{p}:leader", "string (PX)", "the coordinator that runs the timers"),
    ("{p}:meta:index_built", "string", "when the index was rebuilt from PostgreSQL"),
    ("{p}:meta:database", "string", "the PostgreSQL database the index belongs to (system identifier/name)"),
    ("{p}:coordinators", "hash", "running coordinators -> host, pid, file store, last seen"),
]
"""The README's key table; `tests/test_docs.py` checks the README against it."""
