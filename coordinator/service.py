"""The coordinator service: the one object the HTTP API (and the embedded console) call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import text

from coordinator.config import Settings
from coordinator.core import Core
from coordinator.db import create_engine, migrate
from coordinator.errors import StoresMismatch, Unavailable
from coordinator.files import FileService
from coordinator.keys import Keys
from coordinator.lifecycle import Lifecycle
from coordinator.loops import Timers
from coordinator.peers import Peers, database_identity
from coordinator.queue import QueueIndex
from coordinator.reconcile import rebuild_index
from coordinator.services import ServiceRegistry
from coordinator.stats import StatsService
from coordinator.storage import open_store
from coordinator.tasks import TaskService
from coordinator.wakeup import Waker
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
    waker: Waker
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
            health_check_interval=30))
        keys = Keys(settings.key_prefix)
        core = Core(settings, create_engine(settings.database_url), redis, keys, QueueIndex(redis, keys))
        waker = Waker(redis, keys.wakeup)
        lifecycle = Lifecycle(core)
        workers = WorkerService(core, lifecycle, waker)
        store = open_store(settings)
        files = FileService(core, store)
        return cls(core, TaskService(core), lifecycle, workers, StatsService(core),
                   Timers(core, lifecycle, workers, files), waker, files, Peers(redis, settings, store),
                   ServiceRegistry(core))

    async def start(self, timers: bool = True) -> None:
        """Migrate the schema, enter the Redis prefix, rebuild the index from PostgreSQL, start listening and timing.

        Raises:
            StoresMismatch: the prefix's index belongs to another database, or a live coordinator on it uses
                another file store (`peers.py`); checked before the index is touched.
            Unavailable: Redis or PostgreSQL cannot be reached.
        """
        try:
            await self.core.redis.ping()
            database = await database_identity(self.core.engine)
            await migrate(self.core.engine)
            await self.peers.join(database)
        except StoresMismatch:
            raise
        except Exception as exc:
            raise Unavailable(f"cannot reach Redis/PostgreSQL: {type(exc).__name__}: {exc}") from exc
        await rebuild_index(self.core)
        await self.files.start()
        self.waker.start()
        if timers:
            self.timers.start()

    async def stop(self) -> None:
        """Stop timers, leave the prefix's coordinators and close connections."""
        await self.timers.stop()
        await self.peers.leave()
        await self.workers.beats.close()
        await self.files.close()
        await self.waker.stop()
        await self.core.redis.aclose()
        await self.core.engine.dispose()

    async def health(self) -> dict[str, Any]:
        """Whether Redis and PostgreSQL answer (no secrets, no URLs)."""
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
        healthy = all(v == "ok" for v in checks.values())
        return {"status": "ok" if healthy else "degraded", **checks,
                "leader": self.timers.leader_since is not None}
