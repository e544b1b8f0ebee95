"""Background timers: retry promotion (every process), and, in the one leader, dead workers, timeouts, drift.

Only one coordinator at a time holds the leader lease in Redis; it waits one heartbeat timeout after
taking it before declaring any worker dead, so a restarted coordinator does not reap live hosts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid

from sqlalchemy import func, select, text

from coordinator.core import Core, send_commands
from coordinator.files import FileService
from coordinator.models import Task
from coordinator.queue import as_str
from coordinator.reconcile import repair_drift
from coordinator.states import EndReason, TaskStatus
from coordinator.tasks import AttemptEnd, TaskService
from coordinator.workers import WorkerService

log = logging.getLogger(__name__)

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""
"""Leader lease. KEYS[1] the leader key; ARGV[1] this process's id, ARGV[2] lease ms.
Returns 1 renewed, 2 newly taken, 0 held by another process."""
FILE_EXPIRY_PERIOD = 3600.0
"""Seconds between runs of the file retention job (leader only; see FileService.expire_finished)."""


class Timers:
    """The periodic work of one coordinator process."""

    def __init__(self, core: Core, tasks: TaskService, workers: WorkerService,
                 files: FileService | None = None) -> None:
        self.core, self.tasks, self.workers, self.files = core, tasks, workers, files
        self._last_file_expiry = -FILE_EXPIRY_PERIOD
        self.instance = uuid.uuid4().hex
        self.leader_since: float | None = None
        self._renew = core.redis.register_script(RENEW)
        self._last_reconcile = self._last_check = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the timers in the background."""
        self._task = asyncio.create_task(self._run(), name="aidd-timers")

    async def stop(self) -> None:
        """Stop the timers and give up the leader lease."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leader_since is not None:
            await self.core.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                                       1, self.core.keys.leader, self.instance)
            self.leader_since = None

    async def _run(self) -> None:
        period = min(self.core.settings.heartbeat_check_interval, 1.0)
        while True:
            await self.guarded_tick()
            await asyncio.sleep(period)

    async def guarded_tick(self) -> bool:
        """One tick that cannot fail: an error (Redis or PostgreSQL away) is logged, the leadership is held back,
        and the first tick that succeeds again repairs the drift the outage left (tasks stored but not queued).
        Returns whether the tick succeeded."""
        try:
            await self.tick()
            return True
        except Exception as exc:
            log.warning("timers: %s: %s", type(exc).__name__, exc)
            self.leader_since = None
            self._last_reconcile = -math.inf
            return False

    async def tick(self) -> None:
        """One round: promote due retries; as leader, every check interval reap dead workers and time out
        tasks, every reconcile interval repair drift, and hourly expire old task files."""
        if await self.core.index.promote_due():
            await self.core.wake_leases()
        if not await self._lead():
            return
        settings = self.core.settings
        now = time.monotonic()
        assert self.leader_since is not None
        if now - self._last_check >= settings.heartbeat_check_interval:
            self._last_check = now
            if now - self.leader_since >= settings.heartbeat_timeout:
                await self.reap_dead_workers()
            await self.time_out_tasks()
        flushed = not await self.core.redis.exists(self.core.keys.index_built)  # a FLUSHALL: rebuild now
        if flushed or now - self._last_reconcile >= settings.reconcile_interval:
            self._last_reconcile = now
            await repair_drift(self.core)
        if self.files is not None and now - self._last_file_expiry >= FILE_EXPIRY_PERIOD:
            self._last_file_expiry = now
            self.files.expire_in_background()

    async def _lead(self) -> bool:
        lease_ms = int(max(self.core.settings.heartbeat_check_interval * 3, 5) * 1000)
        state = int(await self._renew(keys=[self.core.keys.leader], args=[self.instance, lease_ms]))
        if state == 0:
            self.leader_since = None
        elif state == 2 or self.leader_since is None:
            self.leader_since = time.monotonic()
            log.info("this coordinator (%s) now runs the timers", self.instance[:8])
        return state != 0

    async def reap_dead_workers(self) -> int:
        """Workers silent for heartbeat_timeout go offline; their tasks are requeued (counted as lost)."""
        cutoff = time.time() - self.core.settings.heartbeat_timeout
        dead = await self.core.redis.zrangebyscore(self.core.keys.heartbeats, "-inf", cutoff)
        ids = [uuid.UUID(as_str(d)) for d in dead if isinstance(d, bytes | str)]
        if ids:
            lost = await self.workers.mark_offline(ids, EndReason.WORKER_LOST)
            log.warning("%d worker(s) stopped heartbeating; %d task(s) back to the queue", len(ids), lost)
        return len(ids)

    async def time_out_tasks(self) -> int:
        """Running attempts past their timeout (plus a grace for the agent to report) end as timeouts."""
        grace = self.core.settings.heartbeat_interval * 2
        deadline = Task.started_at + func.make_interval(0, 0, 0, 0, 0, 0, Task.timeout_s + grace)
        async with self.core.engine.connect() as conn:
            late = (await conn.execute(select(Task.id, Task.attempt_id, Task.worker_id, Task.timeout_s).where(
                Task.status == TaskStatus.RUNNING.value, deadline < text("now()")))).all()
        if not late:
            return 0
        ends = [AttemptEnd(r.id, r.attempt_id, EndReason.TIMEOUT, f"timed out after {r.timeout_s}s") for r in late]
        accepted = await self.tasks.end_attempts(ends)
        async with self.core.engine.begin() as conn:
            await send_commands(conn, [(r.worker_id, "cancel-task", {"task_id": str(r.id),
                                                                      "attempt_id": str(r.attempt_id)})
                                       for r in late if r.attempt_id in accepted and r.worker_id], self.core)
        return len(accepted)
