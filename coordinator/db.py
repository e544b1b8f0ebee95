"""PostgreSQL engine and schema migrations (Alembic), run under an advisory lock so coordinators never race."""

from __future__ import annotations

from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x41494444  # "AIDD": the advisory lock id held while migrating


def async_url(url: str) -> str:
    """Accept the URL forms operators write (`postgres://`, `postgresql://`, `+psycopg`) and use asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


POOL_WAIT_S = 10
"""Longest a request waits for a pooled connection before it is answered 503 (retry later)."""
LOCK_WAIT = "10s"
"""Longest a statement waits for a lock (a table an operator locked, a long transaction): then 503, not a hang."""


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine with a pool sized for one coordinator process (JSON through orjson), whose waits for a
    connection and for locks are bounded."""
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                               pool_timeout=POOL_WAIT_S, connect_args={"server_settings": {"lock_timeout": LOCK_WAIT}},
                               json_serializer=_json_dumps, json_deserializer=orjson.loads)


def alembic_config() -> Config:
    """Alembic configuration pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection) -> None:
    connection.execute(text("SET LOCAL lock_timeout = 0"))  # another coordinator may be migrating: wait for it
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; migrations only add, so an upgrade keeps every row."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
