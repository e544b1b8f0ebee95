"""The Redis queue index: typed wrappers around the Lua scripts in `lua/`, each registered once.

PostgreSQL decides; this index makes "which task next, for this worker" fast and atomic. Every
multi-key change is one script, so a crash never leaves half a move.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordinator.keys import Keys, lua_prelude, queue_score
from coordinator.pipelined import PipelinedScript
from coordinator.schemas import TaskSpec

LUA_DIR = Path(__file__).parent / "lua"


def _script_source(name: str) -> str:
    """A script as Redis runs it: the key prelude written from `Keys`, the shared helpers, then the script."""
    return lua_prelude() + (LUA_DIR / "common.lua").read_text() + "\n" + (LUA_DIR / f"{name}.lua").read_text()


def as_str(value: bytes | str) -> str:
    """A Redis reply as text (the client returns bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def now_ms() -> int:
    """Wall clock in milliseconds (the unit of every time stored in Redis)."""
    return int(time.time() * 1000)


def _amount(value: float) -> str:
    """A resource amount as queue keys spell it: `4`, `0.5` (no exponent: `+` separates needs)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def queue_needs(labels: Iterable[str], cpu: float, memory_gb: float, gpu: float, gpu_memory_gb: float) -> str:
    """What a worker must have to serve a task's queue: its labels, then each resource it asks for beyond one CPU
    (`a100+*cpu=4+*mem=16+*gpu=1`). Tasks that ask the same share a queue, so a worker without room for them
    skips the whole queue instead of scanning past its tasks to the ones it could take."""
    shape = [f"*cpu={_amount(cpu)}"] if cpu != 1 else []
    shape += [f"*{name}={_amount(value)}" for name, value in
              (("mem", memory_gb), ("gpu", gpu), ("gmem", gpu_memory_gb)) if value > 0]
    return "+".join([*sorted(set(labels)), *shape])


@dataclass(frozen=True)
class QueuedTask:
    """What the index needs to route a pending task."""

    id: str
    service: str
    group: str
    priority: int
    seq: int
    labels: Sequence[str] = ()
    cpu: float = 1.0
    memory_gb: float = 0.0
    gpu: float = 0.0
    gpu_memory_gb: float = 0.0
    due_ms: int = 0

    @property
    def needs(self) -> str:
        """The needs of this task's queue (see `queue_needs`)."""
        return queue_needs(self.labels, self.cpu, self.memory_gb, self.gpu, self.gpu_memory_gb)

    def encode(self) -> dict[str, Any]:
        """The task as `put_pending.lua` reads it: every value a string (a Lua number that Redis must format for
        HSET costs about 1 µs of the server's time each; `repr` reads back as the same float)."""
        return {"id": self.id, "service": self.service, "group": self.group, "needs": self.needs,
                "score": str(queue_score(self.priority, self.seq)), "labels": " ".join(self.labels),
                "cpu": repr(self.cpu), "memory_gb": repr(self.memory_gb), "gpu": repr(self.gpu),
                "gpu_memory_gb": repr(self.gpu_memory_gb), "due": str(self.due_ms)}


@dataclass(frozen=True)
class RunningTask:
    """A task PostgreSQL says is running, as the index records it."""

    id: str
    service: str
    group: str
    worker: str
    attempt: str
    gpus: Sequence[int] = ()


@dataclass
class GpuFree:
    """What is left of one GPU for new tasks."""

    index: int
    free: float = 1.0
    memory_gb: float = math.inf


@dataclass
class ClaimRequest:
    """A worker's ask for work: what it serves and what it has free."""

    worker: str
    groups: Sequence[str]
    services: Sequence[str] = ()
    labels: Sequence[str] = ()
    max_tasks: int = 1
    cpu: float = math.inf
    memory_gb: float | None = None
    gpus: Sequence[GpuFree] = field(default_factory=list)


@dataclass(frozen=True)
class Claim:
    """One task handed to a worker, with its new attempt id and GPUs."""

    task_id: str
    attempt_id: str
    gpus: list[int]


@dataclass(frozen=True)
class Beat:
    """What the index holds about a worker that just beat."""

    status: str | None
    routed: bool
    """Whether its routing facts are in Redis (else they are rebuilt from PostgreSQL)."""
    commands_flag: bytes | None
    tasks: set[str]


PUT_CHUNK = 100
"""Most tasks one `put_pending` (or `put_running`, `promote_due`) script call takes, which bounds how long one
call holds Redis: about 15 µs of the server's time a new task (the JSON decode and the task's hash most of it). On
a busy 2-core machine a call of 100 took 1.5 ms at best, 3.3 ms median; 1 000 in one call took 25 / 51 ms (the
script before: 38 / 77 ms). See bench/RESULTS.md; bench.compare prints the slow log's longest command of each
submit and drain."""

FINISH_CHUNK = 100
"""Most tasks one `finish` script call takes (each is a `forget` and a list push: about as costly as a put)."""

CLAIM_CHUNK = 32
"""Most tasks one `claim` script call takes. A claimed task costs the script a hash read and write (its set and
queue writes go out once a call); a lease of 256 in one call held Redis 25-51 ms on a busy machine. See
bench/RESULTS.md."""


WORKERS_CHUNK = 500
"""Most workers one `workers_live` script call reads (about 1 ms of the server's time for 500 whole hashes)."""

SCAN_CHUNK = 2000
"""Most ids one read of the index's whole sets takes (ZRANGE, SSCAN, ZMSCORE): one ZRANGE of 120 000 pending tasks
held Redis 14 ms, every claim waiting (bench/RESULTS.md, the 16-core run)."""


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    return (items[i:i + size] for i in range(0, len(items), size))


def _finite(value: float) -> float:
    return 1e12 if math.isinf(value) else value


@dataclass(frozen=True)
class Room:
    """What a submission's room check reads from the index (`QueueIndex.room`)."""

    pending: dict[str, int]
    """Each of its services' runnable tasks, over every group."""
    queues: dict[str, tuple[int, int]]
    """Each of its groups: its queues that hold tasks, and how many of the submission's queues would be new."""


class QueueIndex:
    """Redis side of the scheduler for one key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._put_pending = redis.register_script(_script_source("put_pending"))
        self._put_running = redis.register_script(_script_source("put_running"))
        self._finish = redis.register_script(_script_source("finish"))
        self._claim = redis.register_script(_script_source("claim"))
        self._promote = redis.register_script(_script_source("promote_due"))
        self._heartbeat = PipelinedScript(redis, _script_source("heartbeat"))  # thousands a second, one request each
        self._drop_empty_queues = redis.register_script(_script_source("drop_empty_queues"))
        self._unclaim = redis.register_script(_script_source("unclaim"))
        self._workers_live = redis.register_script(_script_source("workers_live"))
        self._room = redis.register_script(_script_source("room"))

    def close(self) -> None:
        """Close the heartbeat script's own connection (the pool's are closed with the client)."""
        self._heartbeat.close()

    async def put_pending(self, tasks: Sequence[QueuedTask], new: bool = False, chunk: int = PUT_CHUNK) -> int:
        """Queue tasks (or delay them until `due_ms`), replacing any earlier placement; `new`: the tasks were just
        created, so they have no placement to remove.

        One script call takes at most `chunk` tasks, so no submission holds Redis for long (every claim waits
        meanwhile). The calls are not one atomic step, and need not be: every caller has committed the tasks to
        PostgreSQL first, and a crash between two calls leaves the rest pending in PostgreSQL but missing here,
        which the leader's drift check (`reconcile.repair_drift`) queues again (tests/test_big_submission.py).
        """
        unique = list({t.id: t for t in tasks}.values())  # an id twice in one call could be queued and delayed
        done = 0
        for start in range(0, len(unique), chunk):
            payload = orjson.dumps([t.encode() for t in unique[start:start + chunk]])
            done += int(await self._put_pending(args=[self.keys.prefix, now_ms(), payload, "1" if new else "0"]))
        return done

    async def put_running(self, tasks: Sequence[RunningTask]) -> int:
        """Record tasks as running on their workers (index rebuild), at most PUT_CHUNK a script call; PostgreSQL
        has them running, so a crash between calls leaves drift the drift check repairs, as for `put_pending`."""
        done = 0
        for start in range(0, len(tasks), PUT_CHUNK):
            payload = orjson.dumps([{"id": t.id, "service": t.service, "group": t.group, "worker": t.worker,
                                     "attempt": t.attempt, "gpus": ",".join(map(str, t.gpus))}
                                    for t in tasks[start:start + PUT_CHUNK]])
            done += int(await self._put_running(args=[self.keys.prefix, payload]))
        return done

    async def finish(self, status: str, task_ids: Iterable[str], remember: bool = True) -> int:
        """Drop finished tasks from the active index (and, unless repairing, count them as finished now), at most
        FINISH_CHUNK a script call (a report of many held Redis 20+ ms in one). PostgreSQL has them finished
        already: a crash between calls leaves index entries the drift check drops."""
        ids = list(task_ids)
        done = 0
        for start in range(0, len(ids), FINISH_CHUNK):
            done += int(await self._finish(args=[self.keys.prefix, status, "1" if remember else "0",
                                                 *ids[start:start + FINISH_CHUNK]]))
        return done

    async def claim(self, request: ClaimRequest, attempt_ids: Iterable[str]) -> list[Claim] | None:
        """Take up to `max_tasks` fitting tasks; one attempt id is used per claimed task, drawn from `attempt_ids`
        as each call needs them (a lease that finds few tasks makes few ids). None: the worker is not online in
        the index (drained, offline, or its entry lost), so nothing was claimed.

        One script call takes at most CLAIM_CHUNK tasks; the next call starts from what the last left free (CPU,
        memory, each GPU's share and memory, as the script counted them), so a big lease is the same as one call
        that never holds Redis for long. Each call is atomic on its own: two claimers never take the same task,
        and another claimer may take tasks between two calls, as it could between two leases. A call that fails
        gives back what the earlier ones took (if Redis lets it; else the drift check or the index rebuilt after
        the outage queues them again, as for a coordinator that dies between claim and commit), then raises."""
        claims: list[Claim] = []
        cpu, memory_gb = _finite(request.cpu), -1.0 if request.memory_gb is None else request.memory_gb
        gpus: list[dict[str, Any]] = [{"index": g.index, "free": g.free, "memory_gb": _finite(g.memory_gb)}
                                      for g in request.gpus]
        fresh = iter(attempt_ids)
        while len(claims) < request.max_tasks:
            want = min(CLAIM_CHUNK, request.max_tasks - len(claims))
            payload = orjson.dumps({
                "worker": request.worker, "services": list(request.services), "groups": list(request.groups),
                "labels": list(request.labels), "max": want, "cpu": cpu, "memory_gb": memory_gb, "gpus": gpus,
                "attempts": list(islice(fresh, want))})
            try:
                reply = orjson.loads(await self._claim(args=[self.keys.prefix, now_ms(), payload]))
            except RedisError:
                with contextlib.suppress(RedisError):
                    await self.unclaim(request.worker, claims)
                raise
            if not isinstance(reply, dict):  # the script's `[]`: the worker is not online (drained since it asked)
                return claims or None
            taken = reply["claimed"] if isinstance(reply["claimed"], list) else []  # cjson writes [] as {}
            claims += [Claim(c["id"], c["attempt"], list(c["gpus"]) if isinstance(c["gpus"], list) else [])
                       for c in taken]
            if len(taken) < want:
                break
            cpu, memory_gb = float(reply["cpu"]), float(reply["memory_gb"])
            gpus = [{"index": g["index"], "free": float(g["free"]), "memory_gb": float(g["memory_gb"])}
                    for g in (reply["gpus"] if isinstance(reply["gpus"], list) else [])]
        return claims

    async def unclaim(self, worker: str, claims: Sequence[Claim]) -> int:
        """Put claimed tasks back in their queues (their lease could not be confirmed), CLAIM_CHUNK a script call;
        returns how many."""
        given = 0
        for start in range(0, len(claims), CLAIM_CHUNK):
            payload = orjson.dumps([{"id": c.task_id, "attempt": c.attempt_id}
                                    for c in claims[start:start + CLAIM_CHUNK]])
            given += int(await self._unclaim(args=[self.keys.prefix, worker, payload]))
        return given

    async def heartbeat(self, worker: str, now: float, metrics: bytes, stamp: Sequence[str] = ()) -> Beat:
        """Record a worker's beat and telemetry, and set the `stamp` fields of its hash to now (its GPUs busy now);
        its live status, commands flag and tasks (one round trip)."""
        reply = await self._heartbeat([self.keys.prefix, worker, repr(now), metrics, *stamp])
        status, routed, flag = reply[0], reply[1], reply[2]
        return Beat(as_str(status) if status is not None else None, bool(int(routed)), flag,
                    {as_str(i) for i in reply[3:]})

    async def worker_statuses(self, workers: Sequence[str]) -> list[str | None]:
        """Each worker's live status (None where its hash has none), in order."""
        return [as_str(s) if s is not None else None for s in await self._live(workers, whole=False)]

    async def workers_live(self, workers: Sequence[str]) -> list[tuple[dict[bytes, bytes], int]]:
        """Each worker's hash (status, heartbeat, telemetry, ...) and running count, in order."""
        return [(dict(zip(fields[::2], fields[1::2], strict=True)), int(running))
                for fields, running in await self._live(workers, whole=True)]

    async def _live(self, workers: Sequence[str], whole: bool) -> list[Any]:
        """`workers_live.lua`'s entries for these workers, WORKERS_CHUNK a script call."""
        reply: list[Any] = []
        for chunk in _chunks(workers, WORKERS_CHUNK):
            reply += await self._workers_live(args=[self.keys.prefix, "1" if whole else "0", *chunk])
        return reply

    async def promote_due(self, limit: int = 1000) -> int:
        """Move up to `limit` tasks whose backoff has passed into their queues, at most PUT_CHUNK a script call
        (each task moved is about as costly to the server as one put); returns how many moved."""
        moved = 0
        while moved < limit:
            want = min(PUT_CHUNK, limit - moved)
            taken = int(await self._promote(args=[self.keys.prefix, now_ms(), want]))
            moved += taken
            if taken < want:
                break
        return moved

    async def set_service_rules(self, limits: dict[str, int], paused: set[str]) -> None:
        """Replace the per-service running limits and the paused services (claims read both)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.service_limits, self.keys.paused_services)
            if limits:
                pipe.hset(self.keys.service_limits, mapping=limits)  # type: ignore[arg-type]
            if paused:
                pipe.sadd(self.keys.paused_services, *sorted(paused))
            await pipe.execute()

    async def room(self, specs: Sequence[TaskSpec]) -> Room:
        """What the room check of a submission of `specs` reads (`room.lua`, one round trip): its services'
        runnable tasks, counted over every group's queues that hold tasks, and its groups' queues."""
        groups: dict[str, set[str]] = {}
        for spec in specs:
            r = spec.resources
            needs = queue_needs(spec.labels, r.cpu, r.memory_gb, r.gpu, r.gpu_memory_gb)
            groups.setdefault(spec.group, set()).add(self.keys.service_queue(spec.service, spec.group, needs))
        payload = orjson.dumps({"services": sorted({spec.service for spec in specs}),
                                "groups": {group: sorted(queues) for group, queues in groups.items()}})
        reply = orjson.loads(await self._room(args=[self.keys.prefix, payload]))
        return Room({service: int(n) for service, n in reply["pending"].items()},
                    {group: (int(held), int(opening)) for group, (held, opening) in reply["groups"].items()})

    async def drop_empty_queues(self) -> int:
        """Drop registry entries of queues without tasks (and an older version's registry); how many went.

        The scripts keep the registry to queues with tasks; this repairs it after a rebuild and on each drift check.
        """
        return int(await self._drop_empty_queues(args=[self.keys.prefix]))

    async def active_ids(self) -> tuple[set[str], set[str]]:
        """Ids the index holds as pending (queued or delayed) and as running, read SCAN_CHUNK at a time.

        The sorted sets are read by rank (ZSCAN cost Redis eight times the CPU, with their scores): a task that
        joins or leaves a set during the read may shift the ranks and make another be missed or seen twice, as
        any read racing the index's writes may; the drift check reads its candidates again (`placed`).
        """
        pending: set[str] = set()
        for key in (self.keys.pending, self.keys.delayed):
            start = 0
            while members := await self.redis.zrange(key, start, start + SCAN_CHUNK - 1):
                pending.update(as_str(member) for member in cast(list[bytes], members))
                start += SCAN_CHUNK
        running = {as_str(member) async for member in self.redis.sscan_iter(self.keys.running, count=SCAN_CHUNK)}
        return pending, running

    async def placed(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, bool]]:
        """Whether the index holds each of these tasks as pending (queued or delayed) and as running."""
        found: dict[str, tuple[bool, bool]] = {}
        for chunk in map(list, _chunks(task_ids, SCAN_CHUNK)):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zmscore(self.keys.pending, chunk)
                pipe.zmscore(self.keys.delayed, chunk)
                pipe.smismember(self.keys.running, chunk)
                queued, delayed, running = await pipe.execute()
            for task_id, q, d, r in zip(chunk, queued, delayed, running, strict=True):
                found[task_id] = (q is not None or d is not None, bool(r))
        return found
