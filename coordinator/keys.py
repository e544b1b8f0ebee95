"""Every Redis key the coordinator uses, built from one prefix: Python calls `Keys`, the Lua scripts get the same
keys from a prelude written from it (`lua_prelude`), and the README's key table is checked against it (`key_table`).

Redis is an index: everything here can be rebuilt from PostgreSQL (see `reconcile.py`).
"""

from __future__ import annotations

import inspect
import re
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
    def old_queues(self) -> str:
        """Hash: the one queue registry of versions before the per-group ones (`queues`); the drift check deletes
        it (`drop_empty_queues.lua`)."""
        return f"{self.prefix}:queues"

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


KEY_TABLE: dict[str, tuple[str, str]] = {
    "task": ("hash", "hot copy of a task"),
    "pending": ("sorted set", "all pending tasks that can run now; score = -priority*1e11 + seq"),
    "service_queue": ("sorted set", "pending tasks of one service and group; tasks needing labels or other resources "
                      "than one CPU queue apart (needs = a100+*cpu=4+*mem=16+*gpu=1)"),
    "queues": ("hash", "service queues of one group that hold tasks: queue key -> service and needs"),
    "old_queues": ("hash", "the queue registry of versions before the per-group ones (the drift check deletes it)"),
    "queue_groups": ("set", "groups with a queue that holds tasks"),
    "delayed": ("sorted set", "tasks in retry backoff; score = due time (ms)"),
    "running": ("set", "running tasks"),
    "running_of": ("set", "running tasks of one service (concurrency limits)"),
    "service_limits": ("hash", "per-service running limit"),
    "paused_services": ("set", "paused services: their tasks wait"),
    "counters": ("hash", "event counters"),
    "worker": ("hash", "worker status, last heartbeat, readings, when each GPU was last busy"),
    "worker_tasks": ("set", "tasks running on a worker"),
    "heartbeats": ("sorted set", "worker -> last heartbeat time"),
    "wakeup": ("pub/sub channel", "wakes long-polling leases on submission"),
    "leader": ("string (PX)", "the coordinator that runs the timers"),
    "index_built": ("string", "when the index was rebuilt from PostgreSQL"),
    "database": ("string", "the PostgreSQL database the index belongs to (system identifier/name)"),
    "coordinators": ("hash", "running coordinators -> host, pid, file store, last seen"),
}
"""The README's key table: each builder of `Keys`, its type and meaning (`key_table` adds the key itself)."""

_MARK = "\x00"


@dataclass(frozen=True)
class KeyShape:
    """A builder's key with its arguments as named holes: `base`, then `optional` when its optional argument is
    given (`prefix` and each argument spelled `\x00name\x00`)."""

    name: str
    params: tuple[str, ...]
    base: str
    optional: str | None = None
    """What the last argument adds when not empty (`service_queue`'s `:{needs}`)."""


def key_shapes() -> list[KeyShape]:
    """Every builder of `Keys`, called with marked arguments so its spelling can be written out elsewhere."""
    marked = Keys(prefix=f"{_MARK}prefix{_MARK}")
    shapes = []
    for name, member in vars(Keys).items():
        if isinstance(member, property):
            shapes.append(KeyShape(name, (), getattr(marked, name)))
        elif inspect.isfunction(member) and not name.startswith("_"):
            params = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
            holes = [f"{_MARK}{p.name}{_MARK}" for p in params]
            required = [h for h, p in zip(holes, params, strict=True) if p.default is inspect.Parameter.empty]
            base = getattr(marked, name)(*required)
            whole = getattr(marked, name)(*holes)
            shapes.append(KeyShape(name, tuple(p.name for p in params), base,
                                   whole.removeprefix(base) if whole != base else None))
    return shapes


def key_table(prefix: str = "aidd") -> list[tuple[str, str, str]]:
    """The README's key table: (key with `{argument}` holes, type, meaning) per builder, in `Keys`' order."""
    rows = []
    for shape in key_shapes():
        spelled = shape.base + (f"[{shape.optional}]" if shape.optional else "")
        key = re.sub(f"{_MARK}(\\w+){_MARK}", lambda m: prefix if m[1] == "prefix" else f"{{{m[1]}}}", spelled)
        rows.append((key, *KEY_TABLE[shape.name]))
    return rows


def _lua_concat(template: str) -> str:
    """A marked key as a Lua expression: literal parts quoted, holes as the variables of the same name."""
    parts = re.split(f"{_MARK}(\\w+){_MARK}", template)
    if any("'" in text or "\\" in text for text in parts[::2]):
        raise ValueError(f"a key literal Lua cannot quote as is: {template!r}")
    terms = [f"'{part}'" if i % 2 == 0 else part for i, part in enumerate(parts) if part]
    return " .. ".join(terms)


def lua_prelude() -> str:
    """Lua put before every script (`queue.py`): table `K` with each key of `Keys` for the prefix in ARGV[1]
    (`K.pending`, `K.task(task_id)`), so the scripts spell no key themselves and cannot drift from Python."""
    lines = ["-- Generated by coordinator.keys.lua_prelude from the key builder: every key a script uses.",
             "local prefix = ARGV[1]", "local K = {}"]
    for shape in key_shapes():
        if not shape.params:
            lines.append(f"K.{shape.name} = {_lua_concat(shape.base)}")
            continue
        body = f"return {_lua_concat(shape.base)}"
        if shape.optional is not None:
            last = shape.params[-1]
            body = (f"local key = {_lua_concat(shape.base)}; if {last} ~= nil and {last} ~= '' then "
                    f"key = key .. {_lua_concat(shape.optional)} end; return key")
        lines.append(f"function K.{shape.name}({', '.join(shape.params)}) {body} end")
    return "\n".join(lines) + "\n"
