"""`aidd db ...`: the PostgreSQL schema's migrations as a deployment step (Alembic, through the shipped alembic.ini).

With `migrate_on_start: false` the coordinators never change the schema themselves: run `aidd db upgrade` (one job,
before the new version starts), or `aidd db sql` to hand the SQL to a database administrator.
Light to import (every `aidd` command builds this parser): Alembic and SQLAlchemy are imported by `run_db`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.errors import ConfigError

if TYPE_CHECKING:
    from coordinator.config import Settings


def add_db_parser(sub: Any) -> None:
    """`aidd db ACTION` on the `aidd` command's sub-parsers."""
    db = sub.add_parser("db", help="the PostgreSQL schema: upgrade, downgrade, current, history, sql, ini")
    db.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config file (as for aidd)")
    actions = db.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="migrate to a revision (default: head, the newest)")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = actions.add_parser("downgrade", help="migrate back to a revision (-1: one step; base: empty)")
    downgrade.add_argument("revision")
    actions.add_parser("current", help="the revision the database is at")
    actions.add_parser("history", help="every revision, newest first")
    sql = actions.add_parser("sql", help="print an upgrade's SQL without touching a database (FROM:TO, default head)")
    sql.add_argument("revision", nargs="?", default="head")
    actions.add_parser("ini", help="the path of the shipped alembic.ini, for the stock CLI: alembic -c PATH ...")


def _not_chatter(record: logging.LogRecord) -> bool:
    """Alembic's lines about its own set-up, twice per command, say nothing an operator acts on."""
    return not record.getMessage().startswith(("Context impl", "Will assume"))


def run_db(args: argparse.Namespace) -> int:
    """Run one `aidd db` action on the configured database (`sql` and `ini` need none).

    Raises:
        ConfigError: no database configured, one that cannot be used, or a revision Alembic does not know.
    """
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # "setup plugin ..." as it is imported
    import asyncio  # here, not at the top: `aidd --help` imports this module for its parser

    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from coordinator.config import load_settings
    from coordinator.db import ALEMBIC_INI, alembic_config
    from coordinator.preflight import check_urls

    config = alembic_config()
    config.attributes["configure_logging"] = False  # aidd's own log format, set up by the CLI
    logging.getLogger("alembic.runtime.migration").addFilter(_not_chatter)
    if args.db_action == "ini":
        print(ALEMBIC_INI)
        return 0
    try:
        if args.db_action == "sql":
            command.upgrade(config, args.revision, sql=True)
            return 0
        settings = load_settings(getattr(args, "config", None))
        if not settings.database_url:
            raise ConfigError("database_url: not set (DATABASE_URL, AIDD_DATABASE_URL, POSTGRES_* or aidd.yml); "
                              "aidd db works on an external PostgreSQL (the embedded one is migrated at start)")
        check_urls(settings)
        asyncio.run(_reachable(settings))
        config.attributes["url"] = settings.database_url
        actions = {"upgrade": lambda: command.upgrade(config, args.revision),
                   "downgrade": lambda: command.downgrade(config, args.revision),
                   "current": lambda: command.current(config), "history": lambda: command.history(config)}
        actions[args.db_action]()
    except CommandError as exc:
        raise ConfigError(f"db {args.db_action}: {exc}") from None
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ConfigError(f"db {args.db_action}: the database refused it: {detail}") from None
    return 0


async def _reachable(settings: Settings) -> None:
    from coordinator.db import create_engine
    from coordinator.preflight import reach_postgres

    engine = create_engine(settings.database_url or "", pool_size=1)
    try:
        await reach_postgres(settings, engine)
    finally:
        await engine.dispose()
