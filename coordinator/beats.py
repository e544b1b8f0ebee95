"""Heartbeats off PostgreSQL's hot path: telemetry written behind in batches, commands looked up when flagged.

Redis holds every worker's live status, last beat and metrics (what the API and the console show); the
PostgreSQL copy of the telemetry is written behind, all dirty workers in one UPDATE at most `FLUSH_S`
after their beat. A worker's commands are read from PostgreSQL only when its Redis hash has the `cmds`
flag (set by `Core.send_commands`), and at least every `RECHECK_S` anyway, so a flag lost with a flushed
Redis delays a command, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, text

from coordinator.core import Core, utcnow
from coordinator.models import WorkerCommand
from coordinator.outages import OUTAGES, log_bug

log = logging.getLogger(__name__)

FLUSH_S = 0.5
"""Longest a beat's telemetry waits before it is written to PostgreSQL."""
RECHECK_S = 30.0
"""Each worker's commands are looked up in PostgreSQL about this often (0.5x to 1.5x, at random), flag or not."""
FLAG_SETTLE_S = 10.0
"""A flag older than this with no command behind it is stale (its transaction rolled back) and is cleared."""

WRITE_TELEMETRY = text("""
UPDATE workers AS w SET metrics = CAST(v.metrics AS jsonb), last_heartbeat_at = v.at
FROM unnest(CAST(:ids AS uuid[]), CAST(:metrics AS text[]), CAST(:ats AS timestamptz[])) AS v(id, metrics, at)
WHERE w.id = v.id
""")
CLEAR_FLAG = """
if redis.call('HGET', KEYS[1], 'cmds') == ARGV[1] then return redis.call('HDEL', KEYS[1], 'cmds') end
return 0
"""
"""Clear a worker's command flag unless it was set again meanwhile. KEYS[1] the worker hash; ARGV[1] the flag."""


class Beats:
    """Per-process heartbeat bookkeeping for `WorkerService.heartbeat`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._dirty: dict[uuid.UUID, tuple[bytes, datetime]] = {}
        self._flush_due: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._next_check: dict[uuid.UUID, float] = {}
        self._clear_flag = core.redis.register_script(CLEAR_FLAG)

    def record(self, worker_id: uuid.UUID, metrics: bytes) -> None:
        """Remember a beat's telemetry (JSON); it is written within FLUSH_S."""
        self._dirty[worker_id] = (metrics, utcnow())
        if self._flush_due is None:
            self._flush_due = asyncio.get_running_loop().call_later(FLUSH_S, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_due = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.flush(), name="aidd-telemetry")
        elif self._dirty:  # one still running: look again later
            self._flush_due = asyncio.get_running_loop().call_later(FLUSH_S, self._start_flush)

    async def flush(self) -> None:
        """Write the telemetry of every worker heard since the last flush, in one statement."""
        dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        try:
            async with self.core.engine.begin() as conn:
                await conn.execute(WRITE_TELEMETRY, {"ids": list(dirty), "ats": [at for _, at in dirty.values()],
                                                     "metrics": [m.decode() for m, _ in dirty.values()]})
        except OUTAGES as exc:  # PostgreSQL away: keep what is newest for the next try
            log.warning("could not write heartbeat telemetry of %d workers: %s: %s", len(dirty), type(exc).__name__,
                        exc)
            self._dirty = {**dirty, **self._dirty}
            if self._flush_due is None:
                self._flush_due = asyncio.get_running_loop().call_later(FLUSH_S * 4, self._start_flush)
        except Exception:  # not retried: the same batch would fail again; the next beats write afresh
            log_bug(log, self.core.metrics, "heartbeats")

    async def close(self) -> None:
        """Write what is left (the coordinator is stopping)."""
        if self._flush_due is not None:
            self._flush_due.cancel()
            self._flush_due = None
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        await self.flush()

    async def commands(self, worker_id: uuid.UUID, flag: bytes | None) -> list[dict[str, Any]]:
        """The worker's unacknowledged commands: looked up when flagged, or when not looked up for RECHECK_S."""
        now = time.monotonic()
        if flag is None and now < self._next_check.get(worker_id, now):
            return []
        # At a random point of the next 0.5-1.5 RECHECK_S: workers that first beat together (a coordinator
        # restart, a fleet started at once) would otherwise all look in the same second, every time.
        self._next_check[worker_id] = now + RECHECK_S * random.uniform(0.5, 1.5)
        async with self.core.engine.connect() as conn:
            rows = (await conn.execute(select(WorkerCommand.id, WorkerCommand.command, WorkerCommand.args)
                                       .where(WorkerCommand.worker_id == worker_id)
                                       .where(WorkerCommand.acked_at.is_(None))
                                       .order_by(WorkerCommand.id))).all()
        if not rows and flag is not None and time.time() - float(flag) > FLAG_SETTLE_S:
            await self._clear_flag(keys=[self.core.keys.worker(str(worker_id))], args=[flag])
        return [dict(r._mapping) for r in rows]
