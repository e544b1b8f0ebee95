"""Alembic environment, for the coordinator's start (`db.migrate` hands over its connection), `aidd db`, and the
stock `alembic` CLI with the shipped alembic.ini (the database is then the coordinator's configured one).

Online runs take the migration advisory lock first, so coordinators and operators never migrate at once.
"""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy import Connection, text

from coordinator.db import MIGRATION_LOCK, async_url, configured_database_url, create_engine
from coordinator.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SET LOCAL lock_timeout = 0"))  # another coordinator may be migrating: wait
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
        context.run_migrations()


async def _run_on_own_engine(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _url(offline: bool = False) -> str:
    """The URL `aidd db` hands over, else `-x url=...`, else alembic.ini's sqlalchemy.url, else the coordinator's
    configured database (offline SQL needs none: it is written for PostgreSQL)."""
    given = (config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
             or config.get_main_option("sqlalchemy.url"))
    if given or not offline:
        return given or configured_database_url()
    return "postgresql://"


if config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
elif context.is_offline_mode():
    context.configure(url=async_url(_url(offline=True)).replace("+asyncpg", ""), target_metadata=Base.metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    if config.config_file_name is not None and config.attributes.get("configure_logging", True):
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_on_own_engine(_url()))
