"""The coordinator service: the one object the HTTP API (and the embedded console) call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import text

from coordinator.config import Settings
from coordinator.core import Core
from coordinator.db import (
    SchemaOutOfDate,
    check_schema,
    head_revision,
    migrate,
    pooled_engine,
    schema_is_current,
    schema_revision,
    transactions,
)
from coordinator.errors import StoresMismatch, Unavailable
from coordinator.files import FileService
from coordinator.handshake import NO_HANDSHAKE
from coordinator.keys import Keys
from coordinator.lifecycle import Lifecycle
from coordinator.loops import Timers
from coordinator.peers import Peers, database_identity
from coordinator.pending import PendingReasons
from coordinator.preflight import postgres_address
from coordinator.queue import QueueIndex
from coordinator.reasonhistory import ReasonHistory
from coordinator.reconcile import rebuild_index
from coordinator.services import ServiceRegistry
from coordinator.stats import StatsService
from coordinator.storage import open_store
from coordinator.tasks import TaskService
from coordinator.workers import WorkerService

log = logging.getLogger(__name__)
REDIS_CONNECTIONS = 200
"""Redis connections of one coordinator process (requests beyond them wait, up to 10 s, for one)."""


@dataclass
class Coordinator:
    """Tasks, workers and stats over one Redis and one PostgreSQL, with this process's timers."""

    core: Core
    tasks: TaskService
    lifecycle: Lifecycle
    workers: WorkerService
    stats: StatsService
    timers: Timers
    files: FileService
    peers: Peers
    services: ServiceRegistry

    @classmethod
    def build(cls, settings: Settings) -> Coordinator:
        """Wire the parts together; nothing connects until `start`."""
        if not settings.redis_url or not settings.database_url:
            raise ValueError("the coordinator needs redis_url and database_url (embedded servers supply them)")
        # A blocking pool: under a burst, requests wait for a connection instead of failing with 503.
        redis = Redis(connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=10, socket_timeout=10,
            health_check_interval=30, **NO_HANDSHAKE))
        keys = Keys(settings.key_prefix)
        pooled = pooled_engine(settings.database_url)
        core = Core(settings, transactions(pooled), pooled, redis, keys, QueueIndex(redis, keys))
        lifecycle = Lifecycle(core)
        workers = WorkerService(core, lifecycle)
        store = open_store(settings)
        files = FileService(core, store)
        reasons = PendingReasons(core)
        timers = Timers(core, lifecycle, workers, ReasonHistory(reasons), files)
        return cls(core, TaskService(core, reasons), lifecycle, workers, StatsService(core, reasons), timers,
                   files, Peers(redis, settings, store), ServiceRegistry(core))

    async def start(self, timers: bool = True) -> None:
        """Migrate the schema, enter the Redis prefix, rebuild the index from PostgreSQL, start listening and timing.

        Raises:
            SchemaOutOfDate: `migrate_on_start` is off and the schema is not the newest revision.
            StoresMismatch: the prefix's index belongs to another database, or a live coordinator on it uses
                another file store (`peers.py`); checked before the index is touched.
            Unavailable: Redis or PostgreSQL cannot be reached.
        """
        try:
            await self.core.redis.ping()
            database = await database_identity(self.core.engine)
            settings = self.core.settings
            if settings.migrates_at_start:
                await migrate(self.core.engine)
            else:
                await check_schema(self.core.engine, settings.origin("database_url"),
                                   postgres_address(settings.database_url or ""))
            await self.peers.join(database)
        except (StoresMismatch, SchemaOutOfDate):
            raise
        except Exception as exc:
            raise Unavailable(f"cannot reach Redis/PostgreSQL: {type(exc).__name__}: {exc}") from exc
        await rebuild_index(self.core)
        await self.files.start()
        self.core.waker.start()
        if timers:
            self.timers.start()

    async def stop(self) -> None:
        """Stop timers, leave the prefix's coordinators and close connections."""
        await self.timers.stop()
        await self.tasks.reasons.close()
        await self.peers.leave()
        await self.workers.beats.close()
        await self.files.close()
        await self.core.waker.stop()
        self.core.index.close()
        await self.core.redis.aclose()
        await self.core.engine.dispose()

    async def _store_checks(self) -> dict[str, str]:
        """`ok` or `error: <type>` for Redis and PostgreSQL (no secrets, no URLs)."""
        checks: dict[str, str] = {}
        try:
            await self.core.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            async with self.core.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"error: {type(exc).__name__}"
        return checks

    async def health(self) -> dict[str, Any]:
        """Whether Redis and PostgreSQL answer (no secrets, no URLs)."""
        checks = await self._store_checks()
        healthy = all(v == "ok" for v in checks.values())
        return {"status": "ok" if healthy else "degraded", **checks,
                "leader": self.timers.leader_since is not None}

    async def readiness(self) -> dict[str, str]:
        """What `/readyz` checks: both stores answer, the schema is not behind this code's revision, and some
        coordinator (this one or another) holds the leader lease, so dead workers and timeouts are being handled."""
        checks = await self._store_checks()
        if checks["postgres"] == "ok":
            current = await schema_revision(self.core.engine)
            behind = f"at {current or 'none'}, needs {head_revision()}"
            checks["schema"] = "ok" if schema_is_current(current) else behind
        if checks["redis"] == "ok":
            try:
                leading = await self.core.redis.exists(self.core.keys.leader)
                checks["leader"] = "ok" if leading else "none yet"
            except Exception as exc:
                checks["leader"] = f"error: {type(exc).__name__}"
        return checks
