"""Start-up checks of the stores: a Redis, PostgreSQL or MinIO that cannot be reached or refuses us, or a URL of
another kind, is one line naming the setting and the address (never a password), and exit code 2, before anything
is served. Outages after the start are the coordinator's to ride through; these are configuration errors.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.config import ConfigError, Settings
from coordinator.peers import redis_address
from coordinator.storage import NamedStore, StorageUnavailable

REDIS_SCHEMES = ("redis", "rediss", "unix")
CONNECT_TIMEOUT_S = 10


class StoreUnreachable(ConfigError):
    """A store that cannot be used at start: the message names the setting and the address."""


def postgres_address(url: str) -> str:
    """`host:port/database` of a PostgreSQL URL (no user, no password)."""
    parsed = _postgres_url(url, "database_url")
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _postgres_url(url: str, origin: str) -> URL:
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    except ArgumentError:
        raise ConfigError(f"{origin}: not a database URL (e.g. postgresql://user@host:5432/aidd)") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"{origin}: unsupported database {parsed.get_backend_name()!r} in "
                          f"{parsed.render_as_string(hide_password=True)}: aidd needs PostgreSQL "
                          "(postgresql://user@host:5432/aidd)")
    return parsed


def check_urls(settings: Settings) -> None:
    """Refuse store URLs of another kind (`mysql://`, `http://` for Redis) before anything is started.

    Raises:
        ConfigError: naming the variable the URL came from and the URL without its password.
    """
    if settings.redis_url and settings.redis_url.partition("://")[0] not in REDIS_SCHEMES:
        raise ConfigError(f"{settings.origin('redis_url')}: unsupported URL {redis_address(settings.redis_url)}: "
                          "expected redis://, rediss:// or unix://")
    if settings.database_url:
        _postgres_url(settings.database_url, settings.origin("database_url"))


def _first_line(exc: BaseException) -> str:
    """The driver's own error (under SQLAlchemy's and redis-py's wrappers), its type and first line."""
    cause = getattr(exc, "orig", None) or exc
    cause = cause.__cause__ or cause
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


async def reach_redis(settings: Settings, redis: Redis) -> None:
    """Ping Redis; a refusal, a timeout or bad credentials is one line naming the setting and address."""
    where = f"{settings.origin('redis_url')}: Redis at {redis_address(settings.redis_url or '')}"
    try:
        await asyncio.wait_for(redis.ping(), CONNECT_TIMEOUT_S)
    except AuthenticationError as exc:
        raise StoreUnreachable(f"{where} refused the credentials: {exc}") from None
    except ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise StoreUnreachable(f"{where} refused the credentials: {exc}") from None
        raise StoreUnreachable(f"{where} answered an error: {exc}") from None
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnreachable(f"{where} cannot be reached: {_first_line(exc)}") from None


async def reach_postgres(settings: Settings, engine: AsyncEngine) -> None:
    """Connect to PostgreSQL; a refusal, a timeout, bad credentials or a missing database is one line."""
    where = f"{settings.origin('database_url')}: PostgreSQL at {postgres_address(settings.database_url or '')}"
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S), engine.connect():
            pass
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        detail = _first_line(exc)
        if "password" in detail or "authentication" in detail:
            raise StoreUnreachable(f"{where} refused the credentials: {detail}") from None
        raise StoreUnreachable(f"{where} cannot be used: {detail}") from None


async def reach_store(settings: Settings, store: NamedStore) -> None:
    """Make the file store ready (MinIO: the bucket exists or is created); one line when it cannot be."""
    if not settings.minio_endpoint:
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(store.ensure_ready), 4 * CONNECT_TIMEOUT_S)
    except (StorageUnavailable, TimeoutError) as exc:
        detail = str(exc).removeprefix("object store: ") or "no answer"
        refused = any(code in detail for code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"))
        origin = settings.origin("minio_access_key") if refused else settings.origin("minio_endpoint")
        raise StoreUnreachable(f"{origin}: MinIO at {settings.minio_endpoint}"
                               f"{' refused the credentials' if refused else ' cannot be used'}: {detail}") from None
