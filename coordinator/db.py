"""PostgreSQL engine and schema migrations (Alembic), run under an advisory lock so coordinators never race."""

from __future__ import annotations

from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from coordinator.config import ConfigError, load_settings

MIGRATIONS = Path(__file__).parent / "migrations"
ALEMBIC_INI = MIGRATIONS / "alembic.ini"
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
    """Alembic configuration from the shipped alembic.ini (the packaged migrations, the configured database)."""
    return Config(str(ALEMBIC_INI))


def configured_database_url() -> str:
    """The database the coordinator is configured for (aidd.yml, DATABASE_URL, ...), for `aidd db` and `alembic`.

    Raises:
        ConfigError: none is configured (the embedded PostgreSQL migrates itself at start).
    """
    url = load_settings().database_url
    if not url:
        raise ConfigError("database_url: not set (DATABASE_URL, AIDD_DATABASE_URL, POSTGRES_* or aidd.yml); "
                          "the embedded PostgreSQL is migrated by aidd itself at start")
    return url


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision under the migration lock (see migrations/env.py); an upgrade keeps
    every row."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def head_revision() -> str:
    """The newest revision this code knows."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The revision the database's schema is at (None: never migrated)."""
    async with engine.connect() as connection:
        heads = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    return heads[0] if heads else None


def schema_is_current(revision: str | None) -> bool:
    """Whether code of this version can run on a schema at `revision`: its own newest, or one it does not know,
    which a newer release wrote (migrations only add, so during a rolling upgrade the older coordinators go on
    serving once the newer one has migrated). A revision it knows short of its newest is behind."""
    if revision is None:
        return False
    scripts = ScriptDirectory.from_config(alembic_config())
    if revision == scripts.get_current_head():
        return True
    try:
        scripts.get_revision(revision)
    except CommandError:
        return True
    return False


class SchemaOutOfDate(ConfigError):
    """The schema is behind this code's newest revision and `migrate_on_start` is off: refused at start."""

    def __init__(self, origin: str, address: str, current: str | None, head: str) -> None:
        super().__init__(f"{origin}: the schema of {address} is at revision {current or 'none (empty database)'}, "
                         f"this coordinator needs {head}: run `aidd db upgrade` (or set migrate_on_start)")


async def check_schema(engine: AsyncEngine, origin: str, address: str) -> None:
    """Refuse a schema behind this code's newest revision (when the coordinator does not migrate it itself).

    Raises:
        SchemaOutOfDate: naming the setting, the database's address, its revision and the one needed.
    """
    current = await schema_revision(engine)
    if not schema_is_current(current):
        raise SchemaOutOfDate(origin, address, current, head_revision())
