"""Workers: registration, heartbeats, leases (long-poll) and the reports agents send about their attempts."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
from redis.exceptions import RedisError
from sqlalchemy import bindparam, delete, func, insert, select, text, update

from coordinator.beats import Beats
from coordinator.core import Core, send_commands, utcnow, write_audit
from coordinator.errors import WorkerNotFound
from coordinator.models import Attempt, Task, TaskLog, Worker, WorkerCommand
from coordinator.queue import ClaimRequest, GpuFree, as_str
from coordinator.schemas import Heartbeat, LeaseRequest, TaskEvent, WorkerCommandSpec, WorkerRegistration
from coordinator.states import EndReason, TaskStatus, WorkerStatus
from coordinator.tasks import AttemptEnd, TaskService
from coordinator.textcheck import check_text, clean_line
from coordinator.wakeup import Waker

log = logging.getLogger(__name__)

CONFIRM_LEASE = text("""
WITH leased AS (
    UPDATE tasks AS t SET status = 'running', attempt_id = v.attempt_id, attempts = t.attempts + 1,
        worker_id = :worker, gpus = CAST(v.gpus AS jsonb), started_at = now(), available_at = NULL,
        progress = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS uuid[]), CAST(:gpus AS text[])) AS v(id, attempt_id, gpus)
    WHERE t.id = v.id AND t.status = 'pending'
    RETURNING t.id, t.attempt_id, t.attempts, t.service, t.task_type, t.name, t.input_params, t.timeout_s,
        t.gpus, t.input_files, t.outputs, t.cpu, t.memory_gb, t.gpu, t.gpu_memory_gb, t.priority, t."group"
), made AS (
    INSERT INTO attempts (id, task_id, number, worker_id, gpus)
    SELECT attempt_id, id, attempts, :worker, gpus FROM leased
)
SELECT * FROM leased
""")
"""Confirm claimed tasks in PostgreSQL (only those still pending) and open their attempts, in one statement."""

RECORD_SUCCESS = text("""
WITH done AS (
    UPDATE tasks AS t SET status = 'succeeded', result = CAST(v.result AS jsonb), end_reason = 'succeeded',
        progress = 1, error = NULL, finished_at = now(), updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS uuid[]), CAST(:results AS text[])) AS v(id, attempt_id, result)
    WHERE t.id = v.id AND t.attempt_id = v.attempt_id AND t.status = 'running' AND t.worker_id = :worker
    RETURNING t.id, t.attempt_id
), ended AS (
    UPDATE attempts AS a SET ended_at = now(), end_reason = 'succeeded', exit_code = 0,
        started_at = CASE WHEN a.id = ANY(CAST(:started AS uuid[])) THEN COALESCE(a.started_at, now())
                          ELSE a.started_at END
    FROM done WHERE a.id = done.attempt_id
)
SELECT id, attempt_id FROM done
""")
"""Record successes of the worker's current attempts and close those attempts, in one statement; `started`
names attempts whose `started` event came in the same report (short tasks: one write instead of two)."""


def hash_token(token: str) -> str:
    """What is stored of a worker token (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()


def worker_view(row: Any, live: dict[bytes, bytes] | None = None, running: int = 0) -> dict[str, Any]:
    """A worker as the API and the console show it: the record plus its live heartbeat state."""
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


class WorkerService:
    """Everything an agent does, and the operator's commands to workers."""

    def __init__(self, core: Core, tasks: TaskService, waker: Waker) -> None:
        self.core, self.tasks, self.waker = core, tasks, waker
        self.keys = core.keys
        self.beats = Beats(core)
        self._tokens: dict[uuid.UUID, str] = {}

    # -- identity ---------------------------------------------------------------------------------

    async def verify_token(self, worker_id: uuid.UUID, token: str) -> bool:
        """Whether `token` is this worker's own credential."""
        expected: str | None = self._tokens.get(worker_id)
        if expected is None:
            async with self.core.engine.connect() as conn:
                row = (await conn.execute(select(Worker.token_hash).where(Worker.id == worker_id))).first()
            if row is None:
                return False
            expected = str(row.token_hash)
            self._tokens[worker_id] = expected
        return secrets.compare_digest(expected, hash_token(token))

    async def register(self, spec: WorkerRegistration) -> dict[str, Any]:
        """Enroll a host; returns its id and its own token (shown once)."""
        token = secrets.token_urlsafe(32)
        worker_id = uuid.uuid4()
        token_hash = hash_token(token)
        values: dict[str, Any] = {
            "hostname": spec.hostname, "token_hash": token_hash, "services": spec.all_services(),
            "groups": spec.all_groups(), "labels": sorted(set(spec.labels)), "cpu_cores": spec.cpu_cores,
            "memory_gb": spec.memory_gb, "gpus": [g.model_dump() for g in spec.gpus],
            "slots": spec.slots or max(1, int(spec.cpu_cores)), "status": WorkerStatus.ONLINE.value,
            "agent_version": spec.agent_version, "last_heartbeat_at": utcnow(),
        }
        check_text(values, "body")
        async with self.core.engine.begin() as conn:
            await conn.execute(insert(Worker).values(id=worker_id, **values))
        self._tokens[worker_id] = token_hash
        await self._publish_live(worker_id, values)
        return {"id": str(worker_id), "token": token, "heartbeat_interval": self.core.settings.heartbeat_interval,
                "heartbeat_timeout": self.core.settings.heartbeat_timeout}

    async def _publish_live(self, worker_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Put a worker's routing facts and status into Redis (claims read them there)."""
        key = self.keys.worker(str(worker_id))
        live = {"status": values["status"], "hb": time.time(),
                "route": orjson.dumps({k: values[k] for k in ("services", "groups", "labels", "gpus", "cpu_cores")})}
        async with self.core.redis.pipeline(transaction=True) as pipe:
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

    # -- heartbeat --------------------------------------------------------------------------------

    async def heartbeat(self, worker_id: uuid.UUID, beat: Heartbeat) -> dict[str, Any]:
        """Record telemetry; answer with pending commands and the tasks the agent no longer owns."""
        check_text(beat.tasks, "tasks")  # stored with the metrics: no NUL bytes for PostgreSQL
        metrics = orjson.dumps(beat.model_dump(exclude={"current_tasks"}))
        live = await self.core.index.heartbeat(str(worker_id), time.time(), metrics)  # one round trip
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
        commands = await self.beats.commands(worker_id, flag)
        still_here: set[uuid.UUID] = set()
        if unsure:
            # The index can lag PostgreSQL (a flushed Redis not rebuilt yet): a task is stale only if
            # PostgreSQL agrees, since the agent kills what it is told is stale.
            async with self.core.engine.connect() as conn:
                still_here = set((await conn.execute(select(Task.id).where(
                    Task.id.in_(list(unsure)), Task.worker_id == worker_id,
                    Task.status == TaskStatus.RUNNING.value))).scalars())
        if still_here:
            await self.core.resync(still_here)
        if beat.model_fields_set & {"current_tasks", "tasks"}:  # it says what it runs: the rest is not running
            await self._requeue_unlisted(worker_id, owned - claimed)
        stale = (claimed - owned) - {unsure[i] for i in still_here}
        return {"status": status, "commands": commands, "stale_tasks": sorted(stale)}

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
        requeued = await self.tasks.end_attempts(ends, worker_id=worker_id) if ends else set()
        if requeued:
            log.warning("worker %s does not run %d task(s) leased to it; back to the queue", worker_id, len(requeued))
        return len(requeued)

    async def _returning_status(self, worker_id: uuid.UUID) -> WorkerStatus:
        """The status of a worker heard from again after going offline: draining if its last drain /
        resume command was a drain (an operator's drain outlives the worker's absence), else online."""
        async with self.core.engine.connect() as conn:
            last = (await conn.execute(select(WorkerCommand.command).where(
                WorkerCommand.worker_id == worker_id, WorkerCommand.command.in_(["drain", "resume"]))
                .order_by(WorkerCommand.id.desc()).limit(1))).scalar()
        return WorkerStatus.DRAINING if last == "drain" else WorkerStatus.ONLINE

    # -- leasing ----------------------------------------------------------------------------------

    async def lease(self, worker_id: uuid.UUID, ask: LeaseRequest) -> list[dict[str, Any]]:
        """Hand out up to `max_tasks` fitting tasks, waiting up to `wait_s` for some to arrive."""
        deadline = time.monotonic() + min(ask.wait_s, self.core.settings.lease_max_wait)
        while True:
            status, route = await self._route(worker_id)
            if status != WorkerStatus.ONLINE or ask.max_tasks == 0:
                return []
            leased = await self._lease_once(worker_id, route, ask)
            left = deadline - time.monotonic()
            if leased or left <= 0:
                return leased
            if await self.waker.wait(min(left, 2.0), str(worker_id)):
                # Its own tasks ended meanwhile: what it has free is more than it asked for. Answer now, so it
                # asks again with that (a 2-core host leasing 1-CPU tasks would otherwise wait out the poll).
                return []

    async def _lease_once(self, worker_id: uuid.UUID, route: dict[str, Any], ask: LeaseRequest) -> list[dict[str, Any]]:
        gpus = ([GpuFree(int(g["index"]), float(g.get("free", 1.0)), float(g.get("memory_gb", math.inf)))
                 for g in ask.gpus] if ask.gpus is not None else await self._unheld_gpus(worker_id, route["gpus"]))
        request = ClaimRequest(worker=str(worker_id), groups=route["groups"], services=route["services"],
                               labels=route["labels"], max_tasks=ask.max_tasks,
                               cpu=ask.cpu if ask.cpu is not None else float("inf"), memory_gb=ask.memory_gb,
                               gpus=gpus)
        claims = await self.core.index.claim(request, [str(uuid.uuid4()) for _ in range(ask.max_tasks)])
        if not claims:
            return []
        async with self.core.engine.begin() as conn:
            rows = (await conn.execute(CONFIRM_LEASE, {
                "worker": worker_id, "ids": [uuid.UUID(c.task_id) for c in claims],
                "attempts": [uuid.UUID(c.attempt_id) for c in claims],
                "gpus": [orjson.dumps(c.gpus).decode() for c in claims]})).all()
        confirmed = {str(r.id) for r in rows}
        await self.core.resync(c.task_id for c in claims if c.task_id not in confirmed)
        order = {c.task_id: i for i, c in enumerate(claims)}
        rows = sorted(rows, key=lambda r: order[str(r.id)])
        return [{"task_id": str(r.id), "attempt_id": str(r.attempt_id), "attempt": r.attempts,
                 "service": r.service, "task_type": r.task_type, "name": r.name, "input_params": r.input_params,
                 "timeout_s": r.timeout_s, "gpus": r.gpus, "input_files": r.input_files, "outputs": r.outputs,
                 "priority": r.priority, "group": r.group,
                 "resources": {"cpu": r.cpu, "memory_gb": r.memory_gb, "gpu": r.gpu,
                               "gpu_memory_gb": r.gpu_memory_gb}} for r in rows]

    async def _unheld_gpus(self, worker_id: uuid.UUID, registered: Sequence[dict[str, Any]]) -> list[GpuFree]:
        """The worker's registered GPUs less the shares and memory its running tasks hold.

        Used when a lease does not say what is free, so a GPU handed out by an earlier lease is not handed out
        again (whole GPUs are never shared across leases either).
        """
        free = {int(g["index"]): GpuFree(int(g["index"]), 1.0, float(g.get("memory_gb") or math.inf))
                for g in registered}
        if not free:
            return []
        async with self.core.engine.connect() as conn:
            held = (await conn.execute(select(Task.gpus, Task.gpu, Task.gpu_memory_gb).where(
                Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING.value))).all()
        for row in held:
            for index in row.gpus or []:
                gpu = free.get(int(index))
                if gpu is not None:
                    gpu.free = max(0.0, gpu.free - min(row.gpu, 1.0))
                    gpu.memory_gb = max(0.0, gpu.memory_gb - row.gpu_memory_gb)
        return list(free.values())

    # -- reports ----------------------------------------------------------------------------------

    async def report(self, worker_id: uuid.UUID, events: Sequence[TaskEvent]) -> list[bool]:
        """Apply agents' events; each is accepted only for the worker's own current attempt (the fence)."""
        accepted: set[uuid.UUID] = set()
        by_kind: dict[str, list[TaskEvent]] = {}
        for event in events:
            by_kind.setdefault(event.event, []).append(event)
        succeeding = {e.attempt_id for e in by_kind.get("succeeded", [])}
        # A `started` with its success in the same report is written with the success (and fenced by it).
        folded = {e.attempt_id for e in by_kind.get("started", []) if e.attempt_id in succeeding}
        others = [e for e in events if e.event in ("progress", "log")
                  or (e.event == "started" and e.attempt_id not in folded)]
        current = await self._current_attempts(worker_id, others) if others else set()
        simple = [e for e in others if e.attempt_id in current]
        if simple:
            await self._record_progress(worker_id, simple)
            accepted.update(e.attempt_id for e in simple)
        if by_kind.get("succeeded"):
            accepted |= await self._record_success(worker_id, by_kind["succeeded"], folded)
        ends = [AttemptEnd(e.task_id, e.attempt_id, EndReason(e.reason),
                           clean_line(e.error or "", 20_000) or None, e.exit_code)
                for e in by_kind.get("failed", [])]
        ends += [AttemptEnd(e.task_id, e.attempt_id, EndReason.REQUEUED, "handed back by its worker")
                 for e in by_kind.get("handback", [])]
        if ends:
            accepted |= await self.tasks.end_attempts(ends, worker_id=worker_id)
        if any(e.attempt_id in accepted for e in events if e.event in ("succeeded", "failed", "handback")):
            await self.core.redis.publish(self.keys.wakeup, f"w:{worker_id}".encode())  # see `lease`
        results = [e.attempt_id in accepted for e in events]
        if not all(results):  # late reports of attempts no longer current: the fence at work, worth a counter
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
            started = [e.attempt_id for e in events if e.event == "started"]
            if started:
                await conn.execute(update(Attempt).where(Attempt.id.in_(started)).values(started_at=utcnow()))
            progress = [e for e in events if e.progress is not None]
            if progress:
                await conn.execute(update(Task).where(Task.id == bindparam("p_id")).values(
                    progress=bindparam("p_value")), [{"p_id": e.task_id, "p_value": e.progress} for e in progress])
            if lines:
                await conn.execute(insert(TaskLog), lines)
        if lines:
            await self._trim_logs({e.attempt_id for e in events if e.lines})

    async def _trim_logs(self, attempts: set[uuid.UUID]) -> None:
        """Keep only the last log_max_lines_per_attempt lines of each attempt (the tail matters most)."""
        keep = self.core.settings.log_max_lines_per_attempt
        async with self.core.engine.begin() as conn:
            for attempt in attempts:
                cutoff = (await conn.execute(select(TaskLog.id).where(TaskLog.attempt_id == attempt)
                                             .order_by(TaskLog.id.desc()).offset(keep).limit(1))).scalar()
                if cutoff is not None:
                    await conn.execute(delete(TaskLog).where(TaskLog.attempt_id == attempt, TaskLog.id <= cutoff))

    async def _record_success(self, worker_id: uuid.UUID, events: Sequence[TaskEvent],
                              started: set[uuid.UUID]) -> set[uuid.UUID]:
        for i, event in enumerate(events):
            check_text(event.result, f"events[{i}].result")
        async with self.core.engine.begin() as conn:
            rows = (await conn.execute(RECORD_SUCCESS, {
                "worker": worker_id, "ids": [e.task_id for e in events], "attempts": [e.attempt_id for e in events],
                "results": [orjson.dumps(e.result).decode() for e in events], "started": list(started)})).all()
        done = {r.attempt_id for r in rows}
        await self.core.index.finish(TaskStatus.SUCCEEDED, [str(r.id) for r in rows])
        return done

    # -- leaving ----------------------------------------------------------------------------------

    async def mark_offline(self, worker_ids: Sequence[uuid.UUID], reason: EndReason) -> int:
        """Take workers offline and end their running attempts (requeued or counted as lost)."""
        if not worker_ids:
            return 0
        async with self.core.engine.begin() as conn:
            await conn.execute(update(Worker).where(Worker.id.in_(worker_ids))
                               .values(status=WorkerStatus.OFFLINE.value))
            running = (await conn.execute(select(Task.id, Task.attempt_id).where(
                Task.worker_id.in_(worker_ids), Task.status == TaskStatus.RUNNING.value))).all()
        async with self.core.redis.pipeline(transaction=True) as pipe:
            for worker_id in worker_ids:
                pipe.hset(self.keys.worker(str(worker_id)), "status", WorkerStatus.OFFLINE.value)
                pipe.zrem(self.keys.heartbeats, str(worker_id))
            await pipe.execute()
        error = "worker stopped" if reason == EndReason.REQUEUED else "worker stopped heartbeating"
        ends = [AttemptEnd(r.id, r.attempt_id, reason, error) for r in running if r.attempt_id]
        if ends:
            await self.tasks.end_attempts(ends)
        return len(ends)

    async def deregister(self, worker_id: uuid.UUID) -> dict[str, Any]:
        """Graceful stop: the worker goes offline and tasks it still holds go back to the queue."""
        await self._route(worker_id)
        requeued = await self.mark_offline([worker_id], EndReason.REQUEUED)
        return {"id": str(worker_id), "status": WorkerStatus.OFFLINE.value, "requeued": requeued}

    # -- operator view and commands -------------------------------------------------------------

    async def overview(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Every worker with live status, newest registration first."""
        async with self.core.engine.connect() as conn:
            rows = (await conn.execute(select(*Worker.__table__.c).order_by(Worker.registered_at.desc()))).all()
        async with self.core.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.hgetall(self.keys.worker(str(row.id)))
                pipe.scard(self.keys.worker_tasks(str(row.id)))
            live = await pipe.execute()
        views = [worker_view(row, live[2 * i], live[2 * i + 1]) for i, row in enumerate(rows)]
        return [v for v in views
                if (group is None or group in v["groups"]) and (status is None or v["status"] == status)]

    async def get(self, worker_id: uuid.UUID) -> dict[str, Any]:
        """One worker."""
        for view in await self.overview():
            if view["id"] == worker_id:
                return view
        raise WorkerNotFound(str(worker_id))

    async def send(self, worker_ids: Sequence[uuid.UUID], spec: WorkerCommandSpec, actor: str) -> int:
        """Store a command for workers; drain / resume also change their status at once."""
        check_text(spec.args, "args")  # stored as JSONB: no NUL bytes or lone surrogates for PostgreSQL
        new_status = {"drain": WorkerStatus.DRAINING, "resume": WorkerStatus.ONLINE}.get(spec.command)
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
                await self.core.wake_leases()
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

    async def ack(self, worker_id: uuid.UUID, command_ids: Sequence[int]) -> int:
        """Mark commands carried out; they stop coming with heartbeats."""
        async with self.core.engine.begin() as conn:
            done = await conn.execute(update(WorkerCommand).where(
                WorkerCommand.worker_id == worker_id, WorkerCommand.id.in_(command_ids),
                WorkerCommand.acked_at.is_(None)).values(acked_at=utcnow()))
        return int(done.rowcount)

    async def stats(self) -> dict[str, Any]:
        """Cluster totals: cores, memory and GPUs, used vs free, workers by status."""
        workers = await self.overview()
        online = [w for w in workers if w["status"] != WorkerStatus.OFFLINE]
        used_cpu = sum(float(w["metrics"].get("used_cpu", 0)) for w in online)
        used_mem = sum(float(w["metrics"].get("used_memory_gb", 0)) for w in online)
        gpus = sum(len(w["gpus"]) for w in online)
        busy_gpus = sum(1 for w in online for g in w["metrics"].get("gpus", []) if g.get("utilization", 0) > 5)
        by_status: dict[str, int] = {}
        for w in workers:
            by_status[w["status"]] = by_status.get(w["status"], 0) + 1
        cores = sum(w["cpu_cores"] for w in online)
        memory = sum(w["memory_gb"] for w in online)
        return {"workers": len(workers), "by_status": by_status, "cpu_cores": cores, "used_cpu": used_cpu,
                "free_cpu": max(0.0, cores - used_cpu), "memory_gb": memory, "used_memory_gb": used_mem,
                "free_memory_gb": max(0.0, memory - used_mem), "gpus": gpus, "busy_gpus": busy_gpus,
                "slots": sum(w["slots"] for w in online), "running": sum(w["running"] for w in online)}
