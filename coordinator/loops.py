"""Background timers: retry promotion (every process), and, in the one leader, dead workers, timeouts, drift.

Only one coordinator at a time holds the leader lease in Redis (`leader_lease` seconds, renewed every
tick); it waits `takeover_grace` after taking it before declaring any worker dead, so after a restart or a
failover every worker has a full heartbeat timeout to report in. A tick that fails (a store away) gives the
lease up at once and keeps this process out of the race for one lease period, so a healthy coordinator leads;
a tick that fails for a bug keeps it (see `outages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import cast

from sqlalchemy import text

from aiddwire import EndReason
from coordinator.core import Core
from coordinator.files import FileService
from coordinator.lifecycle import Lifecycle
from coordinator.metrics import SNAPSHOT_PERIOD
from coordinator.outages import OUTAGES, log_bug
from coordinator.queue import as_str
from coordinator.reasonhistory import ReasonHistory
from coordinator.reconcile import repair_drift
from coordinator.retention import RETENTION_PERIOD, Retention
from coordinator.stats import read_cluster
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
RESIGN = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"
"""Give the leader lease up. KEYS[1] the leader key; ARGV[1] this process's id (only its own lease goes)."""
STOP_WAIT_S = 10.0
"""Longest `stop` waits for a tick under way to end."""
SILENT_GAPS = 2.5
"""A worker that beats less often than heartbeat_timeout is dead after this many of its own gaps of silence."""
FILE_EXPIRY_PERIOD = 3600.0
"""Seconds between runs of the file retention job (leader only; see FileService.expire_finished)."""


class Timers:
    """The periodic work of one coordinator process."""

    def __init__(self, core: Core, lifecycle: Lifecycle, workers: WorkerService, history: ReasonHistory,
                 files: FileService | None = None) -> None:
        self.core, self.lifecycle, self.workers, self.history, self.files = core, lifecycle, workers, history, files
        self._last_file_expiry = -FILE_EXPIRY_PERIOD
        self._last_snapshot = self._last_retention = -math.inf
        self.retention = Retention(core, files)
        self.instance = uuid.uuid4().hex
        self.leader_since: float | None = None
        self._renew = core.redis.register_script(RENEW)
        self._last_reconcile = self._last_check = 0.0
        self._sit_out_until = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the timers in the background."""
        self._task = asyncio.create_task(self._run(), name="aidd-timers")

    async def stop(self) -> None:
        """Stop the timers and give up the leader lease (another coordinator takes over at its next tick).

        The loop is told to stop as well as cancelled: a cancellation that lands in a store client's own timeout
        can come out as that timeout's error, which a tick survives by design; the flag ends the loop anyway.
        """
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_WAIT_S)
        await self.retention.stop()
        await self._resign()

    async def _resign(self) -> None:
        """Give the leader lease up if this process holds it; the cluster gauges go quiet here either way."""
        self._follow()
        if self.leader_since is not None:
            self.leader_since = None
            await self.core.redis.eval(RESIGN, 1, self.core.keys.leader, self.instance)

    async def _run(self) -> None:
        period = min(self.core.settings.heartbeat_check_interval, 1.0)
        while not self._stopping:
            await self.guarded_tick()
            await asyncio.sleep(period)

    async def guarded_tick(self) -> bool:
        """One tick that cannot fail. An outage (Redis or PostgreSQL away) is logged, the leadership given up
        (a healthy coordinator takes it; this one stays out of the race for one lease period), and the first tick
        that leads again repairs the drift the outage left (tasks stored but not queued). A bug is logged with
        its traceback and counted; the leadership stays (another coordinator runs the same code).
        Returns whether the tick succeeded."""
        try:
            await self.tick()
            return True
        except OUTAGES as exc:
            log.warning("timers: %s: %s", type(exc).__name__, exc)
            self._sit_out_until = time.monotonic() + self.core.settings.leader_lease
            with contextlib.suppress(Exception):  # the store that failed may well be Redis
                await self._resign()
            self.leader_since = None
            self._last_reconcile = -math.inf
            return False
        except Exception:
            log_bug(log, self.core.metrics, "timers")
            return False

    async def tick(self) -> None:
        """One round: promote due retries; as leader, check PostgreSQL answers, and every check interval reap
        dead workers, time out tasks and delete long-offline workers (a batch), every reconcile interval repair
        drift, hourly expire old files, every RETENTION_PERIOD delete finished tasks past the window, every
        SNAPSHOT_PERIOD read the cluster's state for the metrics, and record the queue shapes' pending reasons that
        changed (from the reasons' own snapshot, at most a second old)."""
        if await self.core.index.promote_due():
            await self.core.waker.wake_all()
        if not await self._lead():
            return
        async with self.core.engine.connect() as conn:  # a leader that lost PostgreSQL must hand over now
            await conn.execute(text("SELECT 1"))
        settings = self.core.settings
        now = time.monotonic()
        assert self.leader_since is not None
        if now - self._last_check >= settings.heartbeat_check_interval:
            self._last_check = now
            if now - self.leader_since >= (settings.takeover_grace or settings.heartbeat_timeout):
                await self.reap_dead_workers()
            await self.lifecycle.time_out()
            await self.lifecycle.expire_waiting()
            await self.lifecycle.release_overdue()
            await self.workers.expire_offline()
        flushed = not await self.core.redis.exists(self.core.keys.index_built)  # a FLUSHALL: rebuild now
        if flushed or now - self._last_reconcile >= settings.reconcile_interval:
            self._last_reconcile = now
            await repair_drift(self.core)
        if self.files is not None and now - self._last_file_expiry >= FILE_EXPIRY_PERIOD:
            self._last_file_expiry = now
            self.files.expire_in_background()
        if now - self._last_retention >= RETENTION_PERIOD:
            self._last_retention = now
            self.retention.start(leading=lambda: self.leader_since is not None and not self._stopping)
        if now - self._last_snapshot >= SNAPSHOT_PERIOD:
            self._last_snapshot = now
            self.core.metrics.publish(await read_cluster(self.core, self.workers))
        await self.history.record()

    def _follow(self) -> None:
        """This process no longer leads: the cluster gauges go quiet here (the next leader exports them), and the
        reasons' record is the next leader's."""
        self.core.metrics.publish(None)
        self.history.reset()
        self._last_snapshot = -math.inf

    async def _lead(self) -> bool:
        if time.monotonic() < self._sit_out_until:
            return False
        lease_ms = int(self.core.settings.leader_lease * 1000)
        state = int(await self._renew(keys=[self.core.keys.leader], args=[self.instance, lease_ms]))
        if state == 0:
            if self.leader_since is not None:
                self._follow()
            self.leader_since = None
        elif state == 2 or self.leader_since is None:
            self.leader_since = time.monotonic()
            self.history.reset()  # another leader may have recorded since this one last led
            log.info("this coordinator (%s) now runs the timers", self.instance[:8])
        return state != 0

    async def reap_dead_workers(self) -> int:
        """Workers silent for heartbeat_timeout go offline; their tasks are requeued (counted as lost). One that
        beats less often than that (a Workers API node every 30 s against a 30 s timeout) is given SILENT_GAPS of
        its own gaps between beats instead, so it does not flap offline between two beats."""
        now = time.time()
        timeout = self.core.settings.heartbeat_timeout
        found = await self.core.redis.zrangebyscore(self.core.keys.heartbeats, "-inf", now - timeout,
                                                    withscores=True)
        silent = [(as_str(worker), float(last)) for worker, last in cast(list[tuple[bytes, float]], found)]
        async with self.core.redis.pipeline(transaction=False) as pipe:
            for worker, _last in silent:
                pipe.hget(self.core.keys.worker(worker), "gap")
            gaps = await pipe.execute()
        ids = [uuid.UUID(worker) for (worker, last), gap in zip(silent, gaps, strict=True)
               if now - last >= max(timeout, SILENT_GAPS * float(gap or 0))]
        if ids:
            lost = await self.workers.mark_offline(ids, EndReason.WORKER_LOST)
            self.core.metrics.workers_lost.inc(len(ids))
            log.warning("%d worker(s) stopped heartbeating; %d task(s) back to the queue", len(ids), lost)
        return len(ids)
