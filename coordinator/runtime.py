"""Start-up shared by `aidd`, `aidd --serve` and tests: embedded servers when no Redis/PostgreSQL is configured.

Light to import (the console imports it before its first frame): the server's libraries are imported where the
shared stores are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from coordinator.config import Part, Settings
from coordinator.errors import ConfigError, EmbeddedError

log = logging.getLogger(__name__)


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback without API keys and an agent token."""
    if settings.is_loopback:
        return
    if not settings.api_keys:
        raise ConfigError(f"host: refusing to serve on {settings.host} without api_keys (set AIDD_API_KEYS)")
    if not settings.agent_token:
        raise ConfigError(f"host: refusing to serve on {settings.host} without agent_token (set AIDD_AGENT_TOKEN)")


@contextlib.contextmanager
def stores(settings: Settings, progress: Callable[[str], None] = lambda _stage: None) -> Iterator[Settings]:
    """Settings with Redis and PostgreSQL URLs: as configured, or from embedded servers started (and stopped) here.

    URLs of another kind and a half-external setup are refused before anything is reached (`check_urls`,
    `embedded_parts`); stores that cannot be used, and shared stores that serve another database or file store,
    before anything is served (`check_shared_stores`).
    `progress` is told what the embedded servers' start waits for (`start_embedded`).
    Must run on a thread that outlives it (the main thread, or the console's start thread): the embedded servers
    die with the thread that started them. While it runs,
    a dead embedded server is restarted; if one cannot be, the process gets SIGTERM and, once the caller has
    stopped, this raises EmbeddedError saying why (a non-zero exit, for a service manager to restart aidd).
    """
    if settings.redis_url or settings.database_url:  # (not imported for the embedded default: it imports SQLAlchemy)
        from coordinator.preflight import check_urls

        check_urls(settings)  # before connecting to anything
    parts = embedded_parts(settings)
    if not parts:
        check_shared_stores(settings)
        yield settings
        return
    from coordinator.embedded import start_embedded

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    servers = start_embedded(settings.state_dir, progress=progress)
    servers.supervise()
    log.info("embedded Redis and PostgreSQL running; state in %s", settings.state_dir)
    try:
        ready = settings.model_copy(update={"redis_url": settings.redis_url or servers.redis_url,
                                            "database_url": settings.database_url or servers.database_url,
                                            "embedded": sorted(parts)})
        if parts != {"redis", "postgres"} or settings.minio_endpoint:  # something external to check
            check_shared_stores(ready)
        yield ready
    finally:
        servers.stop()
    if servers.gave_up:
        raise EmbeddedError(servers.gave_up)


def embedded_parts(settings: Settings) -> set[Part]:
    """The stores to run embedded here: both with no URL, none with both, and with one URL only the other one
    when `embedded` asks for it. A silent mix would split a deployment: a coordinator given only the shared
    Redis would rebuild its index from a private PostgreSQL.

    Raises:
        ConfigError: one URL without the other and no `embedded` naming the missing store, or `embedded` naming
            a store whose URL is set too (one line naming the variables).
    """
    url_keys: dict[Part, str] = {"redis": "redis_url", "postgres": "database_url"}
    missing = {part for part, key in url_keys.items() if not getattr(settings, key)}
    if configured := sorted(set(settings.embedded) - missing):
        part = configured[0]
        raise ConfigError(f"embedded: {part} is to run embedded but {settings.origin(url_keys[part])} is set too; "
                          "drop one")
    if missing == {"postgres"} and not settings.embedded:
        raise ConfigError(f"{settings.origin('redis_url')} is set but no database is: set DATABASE_URL (or "
                          "AIDD_DATABASE_URL / POSTGRES_* / DB_HOST / database_url) too, or AIDD_EMBEDDED=postgres "
                          "to run an embedded PostgreSQL beside that Redis")
    if missing == {"redis"} and not settings.embedded:
        raise ConfigError(f"{settings.origin('database_url')} is set but no Redis is: set REDIS_URL (or "
                          "AIDD_REDIS_URL / REDIS_HOST / redis_url) too, or AIDD_EMBEDDED=redis to run an embedded "
                          "Redis beside that database")
    return missing


def check_shared_stores(settings: Settings) -> None:
    """Before anything is served: each store answers and accepts us, the schema is current when the coordinator
    does not migrate it itself, and a shared Redis prefix serves neither another database nor, among its live
    coordinators, another file store. `Coordinator.start` checks the prefix again as it enters it; this early,
    read-only pass makes every refusal one line and exit 2, not a traceback from the server's start-up.

    Raises:
        StoreUnreachable: a store that cannot be reached or refuses the credentials (the setting and address named).
        SchemaOutOfDate: `migrate_on_start` is off and the schema is not the newest.
        StoresMismatch: what the refusal says.
    """
    asyncio.run(_check_shared_stores(settings))


async def _check_shared_stores(settings: Settings) -> None:
    from redis.asyncio import Redis

    from coordinator.db import check_schema, create_engine
    from coordinator.handshake import NO_HANDSHAKE
    from coordinator.peers import Peers, database_identity
    from coordinator.preflight import (
        CONNECT_TIMEOUT_S,
        postgres_address,
        reach_postgres,
        reach_redis,
        reach_store,
    )
    from coordinator.storage import open_store

    redis = Redis.from_url(settings.redis_url or "", socket_connect_timeout=CONNECT_TIMEOUT_S,
                           socket_timeout=CONNECT_TIMEOUT_S, **NO_HANDSHAKE)
    engine = create_engine(settings.database_url or "", pool_size=1)
    store = open_store(settings)
    try:
        await reach_redis(settings, redis)
        await reach_postgres(settings, engine)
        if not settings.migrates_at_start:
            await check_schema(engine, settings.origin("database_url"), postgres_address(settings.database_url or ""))
        await reach_store(settings, store)
        await Peers(redis, settings, store).check(await database_identity(engine))
    finally:
        await engine.dispose()
        await redis.aclose()
