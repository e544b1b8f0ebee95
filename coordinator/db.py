"""PostgreSQL engine and schema migrations (Alembic), run under an advisory lock so coordinators never race.

Alembic (with Mako, which imports Pygments) costs a quarter of a second to import: it is imported only where a
migration runs or a revision is looked up, not at a start whose schema is already the newest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from coordinator.config import ConfigError, load_settings

if TYPE_CHECKING:
    from alembic.config import Config

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
    connection and for locks are bounded. The coordinator's own is `pooled_engine` under `transactions`."""
    return _engine(url, pool_size)


def pooled_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """`create_engine`'s, with connections that run each statement as a transaction of its own (autocommit) while
    no transaction is asked for (`transactions` asks for one).

    So a write that is one statement can go through this engine: atomic, and committed (durable, as PostgreSQL's
    `synchronous_commit` says) before its result comes back, without the BEGIN and COMMIT round trips.
    """
    return _engine(url, pool_size, isolation_level="AUTOCOMMIT")


def _engine(url: str, pool_size: int, **options: str) -> AsyncEngine:
    """The engine of `create_engine` and `pooled_engine`. The pool hands out the connection used last (LIFO): a
    few connections do the work, with their prepared statements and PostgreSQL's plans for them warm (PostgreSQL
    plans a prepared statement afresh on each of a connection's first five runs; for a lease on a small table, a
    plan that reads the whole table)."""
    engine = create_async_engine(
        async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True, pool_timeout=POOL_WAIT_S,
        json_serializer=_json_dumps, json_deserializer=orjson.loads,
        connect_args={"server_settings": {"lock_timeout": LOCK_WAIT}}, **options)
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


def _refuse_closed(_dbapi_connection: object, record: ConnectionPoolEntry, _proxy: object) -> None:
    """Replace a pooled connection the server has closed (PostgreSQL restarted) before it is used.

    SQLAlchemy's `pool_pre_ping` asks the server instead, a round trip on every checkout (three outside
    autocommit), which were a fifth of a single task's submit -> start (bench/RESULTS.md, issue 17). A server that
    stops or restarts closes its connections, and asyncpg sees that on its socket without a round trip.
    """
    if record.driver_connection is None or record.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def transactions(pooled: AsyncEngine) -> AsyncEngine:
    """`pooled`'s connections in READ COMMITTED transactions (`begin`, or one begun by the first statement). An
    isolation level set on the result again does not take (SQLAlchemy applies both): set it on `pooled`."""
    return pooled.execution_options(isolation_level="READ COMMITTED")


def alembic_config() -> Config:
    """Alembic configuration from the shipped alembic.ini (the packaged migrations, the configured database)."""
    from alembic.config import Config

    return Config(str(ALEMBIC_INI))


def newest_revision() -> str:
    """The newest revision shipped, read from the migration files' names (`0005_pending_reason_changes.py`:
    each id is the zero-padded number its file name starts with; a test checks this against Alembic's head)."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


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
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision under the migration lock (see migrations/env.py); an upgrade keeps
    every row. A schema at the newest revision already (every start but the first after an upgrade) is left as it
    is without Alembic."""
    if await _version_table_says(engine) == newest_revision():
        return
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def _version_table_says(engine: AsyncEngine) -> str | None:
    """The one revision in Alembic's version table; None if there is none, or not exactly one."""
    async with engine.connect() as connection:
        if (await connection.execute(text("SELECT to_regclass('alembic_version')"))).scalar() is None:
            return None
        versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    return versions[0] if len(versions) == 1 else None


def head_revision() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The revision the database's schema is at (None: never migrated)."""
    from alembic.migration import MigrationContext

    async with engine.connect() as connection:
        heads = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    return heads[0] if heads else None


def schema_is_current(revision: str | None) -> bool:
    """Whether code of this version can run on a schema at `revision`: its own newest, or one it does not know,
    which a newer release wrote (migrations only add, so during a rolling upgrade the older coordinators go on
    serving once the newer one has migrated). A revision it knows short of its newest is behind."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

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
