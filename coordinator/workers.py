"""Workers: registration, heartbeats, leases (long-poll) and the reports agents send about their attempts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar

import orjson
from redis.exceptions import RedisError
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError

from aiddwire import FINAL_EVENTS, CommandKind, EndReason, EventKind, LeasedTask
from coordinator.beats import Beats
from coordinator.config import Settings
from coordinator.core import Core, send_commands, utcnow, write_audit
from coordinator.errors import WorkerNotFound, WorkerNotOffline
from coordinator.gpus import GpuHold, busy_field, busy_indices, gpu_totals, gpu_views, holds
from coordinator.lifecycle import AttemptEnd, Lifecycle, by_key
from coordinator.models import Task, TaskLog, Worker, WorkerCommand
from coordinator.queue import ClaimRequest, GpuFree, as_str
from coordinator.schemas import (
    Heartbeat,
    LeaseRequest,
    TaskEvent,
    WorkerCommandSpec,
    WorkerRegistration,
    dropped_note,
)
from coordinator.states import DROPPED_STREAM, TaskStatus, WorkerStatus
from coordinator.textcheck import check_text, clean_line

log = logging.getLogger(__name__)
V = TypeVar("V")
REGISTRATION_CACHE_S = 60.0
"""How long a coordinator trusts what it read of a worker's registration (its token hash, its routing facts) before
reading it again: a backstop, since a registration is announced to every coordinator at once (see `verify_token`)."""
TOKEN_HASH = select(Worker.token_hash).where(Worker.id == bindparam("worker_id"))
"""A worker's stored token hash, built once."""
HEARTBEAT_DB_WAIT_S = 2.0
"""Longest a heartbeat waits for PostgreSQL; past it, commands and the stale check wait for the next beat."""

LOG_CUTOFF = text("""
SELECT max(id) FROM (
    SELECT id, row_number() OVER newest AS n, sum(octet_length(line)) OVER newest AS bytes
    FROM task_logs WHERE attempt_id = :attempt WINDOW newest AS (ORDER BY id DESC)
) AS tail WHERE n > :lines OR bytes > :bytes
""")
"""The newest log line of an attempt that falls outside its kept tail (it and every older line go)."""
LOG_DROP = text(f"""
WITH gone AS (
    DELETE FROM task_logs WHERE attempt_id = :attempt AND id < :cutoff RETURNING stream
), cut AS (
    SELECT stream FROM task_logs WHERE id = :cutoff
UNION ALL
    SELECT stream FROM gone
)
UPDATE attempts SET log_dropped = log_dropped + (SELECT count(*) FROM cut WHERE stream <> '{DROPPED_STREAM}')
WHERE id = :attempt RETURNING log_dropped
""")
"""Delete an attempt's lines older than the cutoff line and count them, and the cutoff line, as dropped (an earlier
marker is not counted again); returns the attempt's total."""
STARTED = text(f"""
UPDATE attempts AS a SET started_at = now()
FROM tasks AS t
WHERE a.id = ANY(CAST(:attempts AS uuid[])) AND t.id = a.task_id
    AND {by_key(f"t.attempt_id = a.id AND t.status = '{TaskStatus.RUNNING.value}' AND t.worker_id = :worker")}
RETURNING a.id
""")
"""Record the start of the worker's current attempts, fenced as every report is; one statement, which returns the
attempts accepted (a `started` without its end in the report: a task that runs longer than the agent holds it)."""


def hash_token(token: str) -> str:
    """What is stored of a worker token (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()


def worker_view(row: Any, live: dict[bytes, bytes] | None, running: int, held: dict[int, GpuHold],
                settings: Settings) -> dict[str, Any]:
    """A worker as the API and the console show it: the record plus its live heartbeat state, and its GPUs with
    their readings, the tasks holding them and whether they are allocated, busy or idle (see `gpus`)."""
    data = dict(row._mapping)
    data.pop("token_hash", None)
    live = live or {}
    if b"status" in live:
        data["status"] = live[b"status"].decode()
    if b"metrics" in live:
        data["metrics"] = orjson.loads(live[b"metrics"])
    if b"hb" in live:
        data["heartbeat_age_s"] = round(max(0.0, time.time() - float(live[b"hb"])), 1)
    data["running"] = running
    offline = data["status"] == WorkerStatus.OFFLINE
    data["problem"] = (data.get("metrics") or {}).get("problem") if not offline else None
    busy_at = {i: float(live[busy_field(i).encode()]) for i in held if busy_field(i).encode() in live}
    readings = None if offline else (data.get("metrics") or {}).get("gpus") or []
    data["gpus"] = gpu_views(data.get("gpus") or [], readings, held, busy_at, time.time(), settings)
    return data


def _as_uuids(ids: set[str]) -> dict[uuid.UUID, str]:
    """The ids that are UUIDs, each mapped back to the text it came as."""
    parsed: dict[uuid.UUID, str] = {}
    for text_id in ids:
        try:
            parsed[uuid.UUID(text_id)] = text_id
        except ValueError:
            continue
    return parsed


class Registrations(Generic[V]):
    """One fact of each worker's registration as this coordinator last read it, trusted for REGISTRATION_CACHE_S."""

    def __init__(self) -> None:
        self._read: dict[uuid.UUID, tuple[V, float]] = {}

    def get(self, worker_id: uuid.UUID) -> V | None:
        """The fact, unless it was never read or is too old to trust."""
        entry = self._read.get(worker_id)
        return entry[0] if entry is not None and time.monotonic() - entry[1] <= REGISTRATION_CACHE_S else None

    def put(self, worker_id: uuid.UUID, fact: V) -> V:
        self._read[worker_id] = (fact, time.monotonic())
        return fact

    def forget(self, worker_id: uuid.UUID | None) -> None:
        """Read the worker's fact (None: every worker's) again when next asked."""
        if worker_id is None:
            self._read.clear()
        else:
            self._read.pop(worker_id, None)


class WorkerService:
    """Everything an agent does, and the operator's commands to workers."""

    def __init__(self, core: Core, lifecycle: Lifecycle) -> None:
        self.core, self.lifecycle = core, lifecycle
        self.keys = core.keys
        self.beats = Beats(core)
        self._tokens: Registrations[str] = Registrations()
        """Each worker's token hash (see `verify_token`)."""
        self._routes: Registrations[dict[str, Any]] = Registrations()
        """Each worker's routing facts (see `_routing`)."""
        core.waker.on_token_change = self._forget_registration

    # -- identity ---------------------------------------------------------------------------------

    async def verify_token(self, worker_id: uuid.UUID, token: str) -> bool:
        """Whether `token` is this worker's own credential.

        The hash read is cached: an agent beats every few seconds, and a read a beat cost ~0.1 ms of the
        coordinator's CPU. An identity taken back by a restarted agent, enrolled again or removed has a new token or
        none, announced on the wakeup channel: every coordinator drops its copy at once, all of them when its
        channel was away (messages may have been missed), and any copy after REGISTRATION_CACHE_S (a read that crossed
        the announcement)."""
        token_hash = self._tokens.get(worker_id)
        if token_hash is None:
            async with self.core.statements.connect() as conn:  # one round trip, no BEGIN / ROLLBACK around it
                row = (await conn.execute(TOKEN_HASH, {"worker_id": worker_id})).first()
            if row is None:
                self._tokens.forget(worker_id)
                return False
            token_hash = self._tokens.put(worker_id, str(row.token_hash))
        return secrets.compare_digest(token_hash, hash_token(token))

    def _forget_registration(self, worker: str | None) -> None:
        """Drop what is cached of a worker whose token changed (None: of every worker). Its token changes exactly
        when it registers again or is removed, which is also when its routing facts change."""
        worker_id = None if worker is None else uuid.UUID(worker)
        self._tokens.forget(worker_id)
        self._routes.forget(worker_id)

    async def register(self, spec: WorkerRegistration, worker_id: uuid.UUID | None = None) -> dict[str, Any]:
        """Enroll a host; returns its id and its own token (shown once).

        A host is one host: an agent that comes back under the same hostname takes back the identity it had
        (see `_take_back`), so the record, the console and the metrics keep one row per host. A named node
        (`worker_id` given, see `ids.node_id`) that enrolled before is enrolled again under the same id.
        """
        token = secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        values: dict[str, Any] = {
            "hostname": spec.hostname, "token_hash": token_hash, "services": spec.all_services(),
            "groups": spec.all_groups(), "labels": sorted(set(spec.labels)), "cpu_cores": spec.cpu_cores,
            "memory_gb": spec.memory_gb, "gpus": [g.model_dump() for g in spec.gpus],
            "slots": spec.slots or max(1, int(spec.cpu_cores)), "status": WorkerStatus.ONLINE.value,
            "agent_version": spec.agent_version, "last_heartbeat_at": utcnow(),
        }
        check_text(values, "body")
        if worker_id is not None:  # a named node: its id is its name's
            async with self.core.engine.begin() as conn:
                await conn.execute(pg_insert(Worker).values(id=worker_id, **values).on_conflict_do_update(
                    index_elements=[Worker.id], set_=values))
        else:
            worker_id = await self._take_back(spec, values)
        if worker_id is None:
            worker_id = uuid.uuid4()
            async with self.core.engine.begin() as conn:
                await conn.execute(insert(Worker).values(id=worker_id, **values))
        self._tokens.put(worker_id, token_hash)
        self._routes.forget(worker_id)
        await self.core.waker.tokens_changed([str(worker_id)])
        await self._publish_live(worker_id, values, fresh=True)
        return {"id": str(worker_id), "worker_id": str(worker_id), "token": token,
                "heartbeat_interval": self.core.settings.heartbeat_interval,
                "heartbeat_timeout": self.core.settings.heartbeat_timeout}

    async def _take_back(self, spec: WorkerRegistration, values: dict[str, Any]) -> uuid.UUID | None:
        """The identity a registering agent takes back, updated to `values`; None: it gets a new one.

        An agent that restarted presents its old id and token (kept in its work dir): that identity is its own,
        even while it still looks alive (a crash and a quick restart), and the attempts it held then are lost
        with the old process. Without a valid token, an offline worker of the same hostname is taken back (the
        token was lost, e.g. with a reboot). A live one never is: a second agent running under the same name
        gets a row of its own rather than the two taking the name from each other in turns.
        """
        previous = None
        async with self.core.engine.connect() as conn:
            if spec.worker_id is not None and spec.worker_token:
                previous = (await conn.execute(select(Worker.id, Worker.status, Worker.token_hash).where(
                    Worker.id == spec.worker_id, Worker.hostname == spec.hostname,
                    Worker.token_hash == hash_token(spec.worker_token)))).first()
            if previous is None:
                previous = (await conn.execute(select(Worker.id, Worker.status, Worker.token_hash).where(
                    Worker.hostname == spec.hostname, Worker.status == WorkerStatus.OFFLINE.value)
                    .order_by(Worker.last_heartbeat_at.desc().nulls_last()).limit(1))).first()
        if previous is None:
            return None
        if previous.status != WorkerStatus.OFFLINE:  # its own token: the old process is gone, and so are its tasks
            await self.mark_offline([previous.id], EndReason.WORKER_LOST)
            log.warning("worker %s (%s) restarted: its earlier attempts are lost", previous.id, spec.hostname)
        values["status"] = (await self._returning_status(previous.id)).value
        async with self.core.engine.begin() as conn:
            taken = (await conn.execute(update(Worker).where(
                Worker.id == previous.id, Worker.status == WorkerStatus.OFFLINE.value,
                Worker.token_hash == previous.token_hash).values(metrics={}, **values).returning(Worker.id))).first()
            if taken is None:  # another registration took it meanwhile
                return None
            await conn.execute(update(WorkerCommand).where(  # meant for the earlier process, which is gone
                WorkerCommand.worker_id == previous.id, WorkerCommand.acked_at.is_(None)).values(acked_at=utcnow()))
        return uuid.UUID(str(previous.id))

    async def _publish_live(self, worker_id: uuid.UUID, values: dict[str, Any], fresh: bool = False) -> None:
        """Put a worker's routing facts and status into Redis (claims read them there); `fresh` (a registration)
        first drops what an earlier process of it left there (its readings, when its GPUs were last busy)."""
        key = self.keys.worker(str(worker_id))
        live = {"status": values["status"], "hb": time.time(),
                "route": orjson.dumps({k: values[k] for k in ("services", "groups", "labels", "gpus", "cpu_cores")})}
        async with self.core.redis.pipeline(transaction=True) as pipe:
            if fresh:
                pipe.delete(key)
            pipe.hset(key, mapping=live)  # type: ignore[arg-type]
            pipe.zadd(self.keys.heartbeats, {str(worker_id): live["hb"]})
            await pipe.execute()

    async def _route(self, worker_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
        """A worker's status and routing facts, from Redis (rebuilt from PostgreSQL when missing)."""
        status, route = await self.core.redis.hmget(self.keys.worker(str(worker_id)), ["status", "route"])
        if route is None:
            async with self.core.engine.connect() as conn:
                row = (await conn.execute(select(*Worker.__table__.c).where(Worker.id == worker_id))).first()
            if row is None:
                raise WorkerNotFound(str(worker_id))
            await self._publish_live(worker_id, dict(row._mapping))
            return row.status, dict(row._mapping)
        return as_str(status or b"offline"), orjson.loads(route)

    async def _routing(self, worker_id: uuid.UUID) -> dict[str, Any]:
        """A worker's routing facts for its leases: read once and kept until it registers again (see
        `_forget_registration`), since a lease runs at every task start and the read was a Redis round trip on
        its way (~1 ms of a single task's submit → start). Its status is not kept: the claim script checks it."""
        route = self._routes.get(worker_id)
        if route is None:
            _status, route = await self._route(worker_id)
            self._routes.put(worker_id, route)
        return route

    # -- heartbeat --------------------------------------------------------------------------------

    async def heartbeat(self, worker_id: uuid.UUID, beat: Heartbeat) -> dict[str, Any]:
        """Record telemetry; answer with pending commands and the tasks the agent no longer owns."""
        check_text(beat.tasks, "tasks")  # stored with the metrics: no NUL bytes for PostgreSQL
        check_text(beat.problem, "problem")
        metrics = orjson.dumps(beat.model_dump(exclude={"current_tasks"}))
        busy = [busy_field(i) for i in busy_indices(beat.gpus, self.core.settings)]
        live = await self.core.index.heartbeat(str(worker_id), time.time(), metrics, busy)  # one round trip
        owned, flag = live.tasks, live.commands_flag
        status = live.status or WorkerStatus.OFFLINE.value
        if not live.routed:  # not in Redis (a flushed index): from PostgreSQL
            status, _route = await self._route(worker_id)
        came_back = status == WorkerStatus.OFFLINE
        if came_back:  # alive again; the tasks it lost stay lost. A status change is written at once.
            status = await self._returning_status(worker_id)
            await self.core.redis.hset(self.keys.worker(str(worker_id)), "status", status)
            async with self.core.engine.begin() as conn:
                await conn.execute(update(Worker).where(Worker.id == worker_id).values(status=status))
        claimed = set(beat.current_tasks) | {str(t.get("task_id")) for t in beat.tasks if t.get("task_id")}
        unsure = _as_uuids(claimed - owned)
        self.beats.record(worker_id, metrics)  # telemetry is written behind (see `beats`)
        commands: list[dict[str, Any]] = []
        still_here = set(unsure)  # unless PostgreSQL says otherwise, nothing the agent runs is stale
        try:  # work that can wait for the next beat waits, rather than a beat for a slow or locked database
            async with asyncio.timeout(HEARTBEAT_DB_WAIT_S):
                commands = await self.beats.commands(worker_id, flag)
                still_here = await self._still_running(worker_id, unsure)
                if beat.model_fields_set & {"current_tasks", "tasks"}:  # it says what it runs: the rest is not
                    await self._requeue_unlisted(worker_id, owned - claimed)
        except (TimeoutError, SQLAlchemyError, OSError) as exc:
            log.warning("heartbeat of worker %s: PostgreSQL part deferred (%s)", worker_id, type(exc).__name__)
        if still_here:
            await self.core.resync(still_here)
        stale = (claimed - owned) - {unsure[i] for i in still_here}
        return {"status": status, "commands": commands, "stale_tasks": sorted(stale)}

    async def _still_running(self, worker_id: uuid.UUID, unsure: dict[uuid.UUID, str]) -> set[uuid.UUID]:
        """Of the tasks an agent runs that the index does not give it, those PostgreSQL says it does run.

        The index can lag PostgreSQL (a flushed Redis not rebuilt yet): a task is stale only if PostgreSQL
        agrees, since the agent kills what it is told is stale.
        """
        if not unsure:
            return set()
        async with self.core.engine.connect() as conn:
            return set((await conn.execute(select(Task.id).where(
                Task.id.in_(list(unsure)), Task.worker_id == worker_id,
                Task.status == TaskStatus.RUNNING.value))).scalars())

    async def _requeue_unlisted(self, worker_id: uuid.UUID, unlisted: set[str]) -> int:
        """Requeue the tasks leased to this worker over a heartbeat timeout ago that its heartbeat does not list.

        Their lease reply never reached the agent (or the agent lost them): nothing runs them, and without
        this they would sit `running` until their own timeout. The grace covers a heartbeat sent before the
        lease reply arrived; the attempt ends `requeued` (no retry is used up), conditional on it being current.
        """
        candidates = _as_uuids(unlisted)
        if not candidates:
            return 0
        leased_before = func.now() - timedelta(seconds=self.core.settings.heartbeat_timeout)
        async with self.core.engine.connect() as conn:
            rows = (await conn.execute(select(Task.id, Task.attempt_id).where(
                Task.id.in_(list(candidates)), Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING.value,
                Task.started_at < leased_before))).all()
        ends = [AttemptEnd(r.id, r.attempt_id, EndReason.REQUEUED, "its worker does not run it (lease reply lost?)")
                for r in rows if r.attempt_id is not None]
        requeued = await self.lifecycle.end(ends, worker_id=worker_id)
        if requeued:
            log.warning("worker %s does not run %d task(s) leased to it; back to the queue", worker_id, len(requeued))
        return len(requeued)

    async def _returning_status(self, worker_id: uuid.UUID) -> WorkerStatus:
        """The status of a worker heard from again after going offline: draining if its last drain /
        resume command was a drain (an operator's drain outlives the worker's absence), else online."""
        async with self.core.engine.connect() as conn:
            last = (await conn.execute(select(WorkerCommand.command).where(
                WorkerCommand.worker_id == worker_id,
                WorkerCommand.command.in_([CommandKind.DRAIN, CommandKind.RESUME]))
                .order_by(WorkerCommand.id.desc()).limit(1))).scalar()
        return WorkerStatus.DRAINING if last == CommandKind.DRAIN else WorkerStatus.ONLINE

    # -- leasing ----------------------------------------------------------------------------------

    async def lease(self, worker_id: uuid.UUID, ask: LeaseRequest,
                    gone: Callable[[], Awaitable[bool]] | None = None) -> list[LeasedTask]:
        """Hand out up to `max_tasks` fitting tasks, waiting up to `wait_s` for some to arrive.

        `gone` says whether the asking agent has hung up (it died while it waited): then what was claimed for it
        goes straight back to the queue instead of waiting for a worker loss. It is asked after the claim, not
        before: asking yields to the event loop, and a woken lease should claim before the submission that woke
        it finishes its answer (a lease of a dead agent claims once, and hands the tasks back at once).
        """
        deadline = time.monotonic() + min(ask.wait_s, self.core.settings.lease_max_wait)
        route, looked = await self._routing(worker_id), False
        while True:
            if ask.max_tasks == 0:
                return []
            leased = await self._lease_once(worker_id, route, ask)
            if leased is None:  # the claim found it not online: drained, offline, or its entry lost with Redis
                self._routes.forget(worker_id)
                status, route = await self._route(worker_id)  # puts a lost entry back from PostgreSQL
                if status != WorkerStatus.ONLINE or looked:
                    return []
                looked = True
                continue
            if gone is not None and await gone():
                if leased:
                    await self._undelivered(worker_id, leased)
                return []
            left = deadline - time.monotonic()
            if leased or left <= 0 or self.core.waker.closed:
                return leased
            if await self.core.waker.wait(min(left, 2.0), str(worker_id)):
                # Its own tasks ended meanwhile: what it has free is more than it asked for. Answer now, so it
                # asks again with that (a 2-core host leasing 1-CPU tasks would otherwise wait out the poll).
                return []

    async def _undelivered(self, worker_id: uuid.UUID, leased: Sequence[LeasedTask]) -> None:
        """Tasks leased to an agent that hung up before the answer: requeued at once, no retry or loss counted."""
        ends = [AttemptEnd(uuid.UUID(t["task_id"]), uuid.UUID(t["attempt_id"]), EndReason.REQUEUED,
                           "lease not delivered: its agent had gone") for t in leased]
        requeued = await self.lifecycle.end(ends, worker_id=worker_id)
        log.warning("worker %s hung up while leasing; %d task(s) back to the queue", worker_id, len(requeued))

    async def _lease_once(self, worker_id: uuid.UUID, route: dict[str, Any], ask: LeaseRequest,
                          ) -> list[LeasedTask] | None:
        """Claim and start what fits now; None when the claim script finds the worker not online."""
        gpus = ([GpuFree(int(g["index"]), float(g.get("free", 1.0)), float(g.get("memory_gb", math.inf)))
                 for g in ask.gpus] if ask.gpus is not None else await self._unheld_gpus(worker_id, route["gpus"]))
        request = ClaimRequest(worker=str(worker_id), groups=route["groups"], services=route["services"],
                               labels=route["labels"], max_tasks=ask.max_tasks,
                               cpu=ask.cpu if ask.cpu is not None else float("inf"), memory_gb=ask.memory_gb,
                               gpus=gpus)
        claims = await self.core.index.claim(request, (str(uuid.uuid4()) for _ in range(ask.max_tasks)))
        if claims is None:
            return None
        if not claims:
            return []
        try:
            return await self.lifecycle.start(worker_id, claims)
        except (SQLAlchemyError, OSError):  # PostgreSQL away: the claims go back now, not at a drift check
            await self.core.index.unclaim(str(worker_id), claims)
            raise

    async def _unheld_gpus(self, worker_id: uuid.UUID, registered: Sequence[dict[str, Any]]) -> list[GpuFree]:
        """The worker's registered GPUs less the shares and memory its running tasks hold.

        Used when a lease does not say what is free, so a GPU handed out by an earlier lease is not handed out
        again (whole GPUs are never shared across leases either).
        """
        if not registered:
            return []
        async with self.core.engine.connect() as conn:
            running = (await conn.execute(select(Task.gpus, Task.gpu, Task.gpu_memory_gb).where(
                Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING.value))).all()
        held = holds(running)
        free = []
        for gpu in registered:
            hold = held.get(int(gpu["index"]), GpuHold())
            memory = float(gpu.get("memory_gb") or math.inf)
            free.append(GpuFree(int(gpu["index"]), max(0.0, 1.0 - hold.share), max(0.0, memory - hold.memory_gb)))
        return free

    # -- reports ----------------------------------------------------------------------------------

    async def report(self, worker_id: uuid.UUID, events: Sequence[TaskEvent]) -> list[bool]:
        """Apply agents' events; each is accepted only for the worker's own current attempt (the fence)."""
        accepted: set[uuid.UUID] = set()
        by_kind: dict[EventKind, list[TaskEvent]] = {}
        for event in events:
            by_kind.setdefault(event.event, []).append(event)
        succeeding = {e.attempt_id for e in by_kind.get(EventKind.SUCCEEDED, [])}
        # A `started` with its success in the same report is written with the success (and fenced by it).
        folded = {e.attempt_id for e in by_kind.get(EventKind.STARTED, []) if e.attempt_id in succeeding}
        starting = [e.attempt_id for e in by_kind.get(EventKind.STARTED, []) if e.attempt_id not in folded]
        if starting:
            async with self.core.statements.connect() as conn:
                accepted.update((await conn.execute(STARTED, {"attempts": starting, "worker": worker_id})).scalars())
        others = [e for e in events if e.event in (EventKind.PROGRESS, EventKind.LOG)]
        current = await self._current_attempts(worker_id, others) if others else set()
        simple = [e for e in others if e.attempt_id in current]
        if simple:
            await self._record_progress(worker_id, simple)
            accepted.update(e.attempt_id for e in simple)
        if by_kind.get(EventKind.SUCCEEDED):
            accepted |= await self.lifecycle.succeed(worker_id, by_kind[EventKind.SUCCEEDED], folded)
        ends = [AttemptEnd(e.task_id, e.attempt_id, EndReason(e.reason),
                           clean_line(e.error or "", 20_000) or None, e.exit_code)
                for e in by_kind.get(EventKind.FAILED, [])]
        ends += [AttemptEnd(e.task_id, e.attempt_id, EndReason.REQUEUED,
                            clean_line(e.error or "", 2000) or "handed back by its worker")
                 for e in by_kind.get(EventKind.HANDBACK, [])]
        accepted |= await self.lifecycle.end(ends, worker_id=worker_id)
        if any(e.attempt_id in accepted for e in events if e.event in FINAL_EVENTS):
            await self.core.waker.wake_worker(str(worker_id))  # see `lease`
        results = [e.attempt_id in accepted for e in events]
        if not all(results):  # late reports of attempts no longer current: the fence at work, worth a counter
            for event, ok in zip(events, results, strict=True):
                if not ok:
                    self.core.metrics.refused.labels(event.event).inc()
            with contextlib.suppress(RedisError):
                await self.core.redis.hincrby(self.keys.counters, "refused", results.count(False))
        return results

    async def _current_attempts(self, worker_id: uuid.UUID, events: Sequence[TaskEvent]) -> set[uuid.UUID]:
        async with self.core.engine.connect() as conn:
            return {attempt for attempt in (await conn.execute(
                select(Task.attempt_id).where(Task.id.in_({e.task_id for e in events}))
                .where(Task.attempt_id.in_({e.attempt_id for e in events}))
                .where(Task.status == TaskStatus.RUNNING.value, Task.worker_id == worker_id))).scalars()
                if attempt is not None}

    async def _record_progress(self, worker_id: uuid.UUID, events: Sequence[TaskEvent]) -> None:
        settings = self.core.settings
        lines = [{"task_id": e.task_id, "attempt_id": e.attempt_id, "stream": ln.stream,
                  "line": clean_line(ln.line, settings.log_line_max_bytes)}
                 for e in events for ln in e.lines]
        async with self.core.engine.begin() as conn:
            progress = [e for e in events if e.progress is not None]
            if progress:
                await conn.execute(update(Task).where(Task.id == bindparam("p_id")).values(
                    progress=bindparam("p_value")), [{"p_id": e.task_id, "p_value": e.progress} for e in progress])
            if lines:
                await conn.execute(insert(TaskLog), lines)
        if lines:
            await self._trim_logs({e.attempt_id for e in events if e.lines})

    async def _trim_logs(self, attempts: set[uuid.UUID]) -> None:
        """Keep only the tail of each attempt's log: its last log_max_lines_per_attempt lines, and no more than
        log_max_bytes_per_attempt bytes of them (a flood of long lines is bounded too). The newest line that goes
        becomes a marker saying how many went (`… 660 000 lines dropped …`), so the log reads true where it
        was cut; the count adds up on the attempt across trims."""
        settings = self.core.settings
        async with self.core.engine.begin() as conn:
            for attempt in attempts:
                cutoff = (await conn.execute(LOG_CUTOFF, {
                    "attempt": attempt, "lines": settings.log_max_lines_per_attempt,
                    "bytes": settings.log_max_bytes_per_attempt})).scalar()
                if cutoff is not None:
                    dropped = (await conn.execute(LOG_DROP, {"attempt": attempt, "cutoff": cutoff})).scalar_one()
                    await conn.execute(update(TaskLog).where(TaskLog.id == cutoff).values(
                        stream=DROPPED_STREAM, line=dropped_note(dropped)))

    # -- leaving ----------------------------------------------------------------------------------

    async def mark_offline(self, worker_ids: Sequence[uuid.UUID], reason: EndReason) -> int:
        """Take workers offline and end their running attempts (requeued or counted as lost)."""
        if not worker_ids:
            return 0
        async with self.core.engine.begin() as conn:
            await conn.execute(update(Worker).where(Worker.id.in_(worker_ids))
                               .values(status=WorkerStatus.OFFLINE.value))
        async with self.core.redis.pipeline(transaction=True) as pipe:
            for worker_id in worker_ids:
                pipe.hset(self.keys.worker(str(worker_id)), "status", WorkerStatus.OFFLINE.value)
                pipe.zrem(self.keys.heartbeats, str(worker_id))
            await pipe.execute()
        return await self.lifecycle.lose_workers(worker_ids, reason)

    async def deregister(self, worker_id: uuid.UUID) -> dict[str, Any]:
        """Graceful stop: the worker goes offline and tasks it still holds go back to the queue."""
        await self._route(worker_id)
        requeued = await self.mark_offline([worker_id], EndReason.REQUEUED)
        return {"id": str(worker_id), "status": WorkerStatus.OFFLINE.value, "requeued": requeued}

    async def remove(self, worker_id: uuid.UUID, actor: str) -> dict[str, Any]:
        """Delete an offline worker from the record, e.g. a host retired for good (its tasks and attempts keep
        the id; an agent that comes back later under that hostname registers anew).

        Raises:
            WorkerNotFound: no such worker.
            WorkerNotOffline: it is online or draining.
        """
        if not await self._delete_offline([worker_id], actor):
            async with self.core.engine.connect() as conn:
                status = (await conn.execute(select(Worker.status).where(Worker.id == worker_id))).scalar()
            if status is None:
                raise WorkerNotFound(str(worker_id))
            raise WorkerNotOffline(str(worker_id), status)
        return {"id": str(worker_id), "removed": True}

    async def expire_offline(self, batch: int = 100) -> int:
        """Delete up to `batch` workers offline for longer than `offline_worker_expiry` (0: never); the leader's
        timers call this every check interval, so a backlog goes in small steps."""
        expiry = self.core.settings.offline_worker_expiry
        if not expiry:
            return 0
        silent_since = func.now() - timedelta(seconds=expiry)
        async with self.core.engine.connect() as conn:
            expired = list((await conn.execute(select(Worker.id).where(
                Worker.status == WorkerStatus.OFFLINE.value, Worker.last_heartbeat_at < silent_since)
                .order_by(Worker.last_heartbeat_at).limit(batch))).scalars())
        return len(await self._delete_offline(expired, "expiry")) if expired else 0

    async def _delete_offline(self, worker_ids: Sequence[uuid.UUID], actor: str) -> list[uuid.UUID]:
        """Delete those of these workers that are offline (one statement, so one that comes back is kept)."""
        async with self.core.engine.begin() as conn:
            removed = [uuid.UUID(str(i)) for i in (await conn.execute(delete(Worker).where(
                Worker.id.in_(worker_ids), Worker.status == WorkerStatus.OFFLINE.value).returning(Worker.id)))
                .scalars()]
            if removed:
                target = str(removed[0]) if len(removed) == 1 else f"{len(removed)} workers"
                await write_audit(conn, actor, "worker.remove", target, len(removed), {})
        await self._forget_live(removed)
        return removed

    async def _forget_live(self, worker_ids: Sequence[uuid.UUID]) -> None:
        """Drop removed workers' Redis state and cached tokens."""
        if not worker_ids:
            return
        async with self.core.redis.pipeline(transaction=True) as pipe:
            for worker_id in worker_ids:
                pipe.delete(self.keys.worker(str(worker_id)), self.keys.worker_tasks(str(worker_id)))
                pipe.zrem(self.keys.heartbeats, str(worker_id))
                self._forget_registration(str(worker_id))
            await pipe.execute()
        await self.core.waker.tokens_changed(str(w) for w in worker_ids)

    # -- operator view and commands -------------------------------------------------------------

    async def overview(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Every worker with live status and its GPUs' tasks, newest registration first."""
        views = await self._views()
        return [v for v in views
                if (group is None or group in v["groups"]) and (status is None or v["status"] == status)]

    async def get(self, worker_id: uuid.UUID) -> dict[str, Any]:
        """One worker."""
        views = await self._views(worker_id)
        if not views:
            raise WorkerNotFound(str(worker_id))
        return views[0]

    async def task_gpus(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """The GPUs a running task holds, as its worker's view shows them (readings, busy, idle)."""
        if task["status"] != TaskStatus.RUNNING or not task["gpus"] or task["worker_id"] is None:
            return []
        views = await self._views(task["worker_id"])
        held = {int(i) for i in task["gpus"]}
        return [g for g in views[0]["gpus"] if g["index"] in held] if views else []

    async def _views(self, worker_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """Workers as `worker_view` shows them (every one, or one), newest registration first."""
        workers = select(*Worker.__table__.c).order_by(Worker.registered_at.desc())
        on_gpus = select(Task.id, Task.name, Task.attempts, Task.worker_id, Task.gpus, Task.gpu, Task.gpu_memory_gb,
                         Task.started_at).where(Task.status == TaskStatus.RUNNING.value, Task.gpu > 0)
        if worker_id is not None:
            workers, on_gpus = workers.where(Worker.id == worker_id), on_gpus.where(Task.worker_id == worker_id)
        async with self.core.engine.connect() as conn:
            rows = (await conn.execute(workers)).all()
            running = (await conn.execute(on_gpus)).all() if rows else []
        by_worker: dict[uuid.UUID, list[Any]] = {}
        for task in running:
            by_worker.setdefault(task.worker_id, []).append(task)
        live = await self.core.index.workers_live([str(row.id) for row in rows])
        return [worker_view(row, fields, running, holds(by_worker.get(row.id, [])), self.core.settings)
                for row, (fields, running) in zip(rows, live, strict=True)]

    async def send(self, worker_ids: Sequence[uuid.UUID], spec: WorkerCommandSpec, actor: str) -> int:
        """Store a command for workers; drain / resume also change their status at once."""
        check_text(spec.args, "args")  # stored as JSONB: no NUL bytes or lone surrogates for PostgreSQL
        new_status = {CommandKind.DRAIN: WorkerStatus.DRAINING,
                      CommandKind.RESUME: WorkerStatus.ONLINE}.get(spec.command)
        async with self.core.engine.begin() as conn:
            known = list((await conn.execute(select(Worker.id).where(Worker.id.in_(worker_ids)))).scalars())
            if not known and len(worker_ids) == 1:
                raise WorkerNotFound(str(worker_ids[0]))
            await send_commands(conn, [(w, spec.command, spec.args) for w in known], self.core)
            if new_status is not None and known:
                await conn.execute(update(Worker).where(Worker.id.in_(known), Worker.status != "offline")
                                   .values(status=new_status.value))
            target = str(known[0]) if len(known) == 1 else f"{len(known)} workers"
            await write_audit(conn, actor, f"worker.{spec.command}", target, len(known), {"args": spec.args})
        if new_status is not None:
            for worker_id in known:
                key = self.keys.worker(str(worker_id))
                if (await self.core.redis.hget(key, "status")) not in (None, b"offline"):
                    await self.core.redis.hset(key, "status", new_status.value)
            if new_status == WorkerStatus.ONLINE:
                await self.core.waker.wake_all()
        return len(known)

    async def broadcast(self, spec: WorkerCommandSpec, actor: str) -> int:
        """Send a command to every worker that is not offline (of one group, if given); audited even when none is."""
        workers = await self.overview(group=spec.group)
        return await self.send([w["id"] for w in workers if w["status"] != WorkerStatus.OFFLINE], spec, actor)

    async def commands(self, worker_id: uuid.UUID, pending_only: bool = True) -> list[dict[str, Any]]:
        """A worker's commands, oldest first."""
        cond = WorkerCommand.worker_id == worker_id
        if pending_only:
            cond = cond & WorkerCommand.acked_at.is_(None)
        async with self.core.engine.connect() as conn:
            rows = (await conn.execute(select(*WorkerCommand.__table__.c).where(cond)
                                       .order_by(WorkerCommand.id))).all()
        return [dict(r._mapping) for r in rows]

    async def clear_commands(self, worker_id: uuid.UUID, actor: str) -> int:
        """Drop every command the worker has not acknowledged (an operator clearing a node's queue); audited."""
        pending = [c["id"] for c in await self.commands(worker_id)]
        cleared = await self.ack(worker_id, pending) if pending else 0
        async with self.core.engine.begin() as conn:
            await write_audit(conn, actor, "worker.clear-commands", str(worker_id), cleared)
        return cleared

    async def ack(self, worker_id: uuid.UUID, command_ids: Sequence[int]) -> int:
        """Mark commands carried out; they stop coming with heartbeats. An acknowledged cancel-task means its
        attempt's process is gone (agents acknowledge it once the process has ended): a task waiting for that
        may run again."""
        async with self.core.engine.begin() as conn:
            done = (await conn.execute(update(WorkerCommand).where(
                WorkerCommand.worker_id == worker_id, WorkerCommand.id.in_(command_ids),
                WorkerCommand.acked_at.is_(None)).values(acked_at=utcnow())
                .returning(WorkerCommand.command, WorkerCommand.args))).all()
        stopped = _as_uuids({str(r.args.get("attempt_id")) for r in done if r.command == CommandKind.CANCEL_TASK})
        await self.lifecycle.release(stopped)
        return len(done)

    async def stats(self) -> dict[str, Any]:
        """Cluster totals: cores, memory and GPUs (allocated, busy, idle), used vs free, workers by status."""
        workers = await self.overview()
        online = [w for w in workers if w["status"] != WorkerStatus.OFFLINE]
        used_cpu = sum(float(w["metrics"].get("used_cpu", 0)) for w in online)
        used_mem = sum(float(w["metrics"].get("used_memory_gb", 0)) for w in online)
        by_status: dict[str, int] = {}
        for w in workers:
            by_status[w["status"]] = by_status.get(w["status"], 0) + 1
        cores = sum(w["cpu_cores"] for w in online)
        memory = sum(w["memory_gb"] for w in online)
        return {"workers": len(workers), "by_status": by_status, "cpu_cores": cores, "used_cpu": used_cpu,
                "free_cpu": max(0.0, cores - used_cpu), "memory_gb": memory, "used_memory_gb": used_mem,
                "free_memory_gb": max(0.0, memory - used_mem), **gpu_totals(workers),
                "slots": sum(w["slots"] for w in online), "running": sum(w["running"] for w in online)}
