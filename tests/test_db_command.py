"""Migrations as a deployment step, on a real PostgreSQL: `aidd db ...`, the stock `alembic` CLI with the shipped
alembic.ini, and a coordinator that does not migrate refusing an out-of-date schema with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine as sync_engine
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from coordinator.db import ALEMBIC_INI, check_schema, create_engine, head_revision, newest_revision, schema_is_current

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FOREIGN_ENV = ("AIDD_", "REDIS_", "DATABASE_URL", "POSTGRES_", "MINIO_")


@pytest.fixture
def database(servers: tuple[str, str]) -> Iterator[str]:
    """A brand-new, empty database on the session's PostgreSQL (dropped afterwards): its URL."""
    name = f"aidd_db_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(servers[1]).set(drivername="postgresql+psycopg", database="postgres")
    admin = sync_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(servers[1]).set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def run(args: list[str], database_url: str | None, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A command as an operator runs it, configured only by the environment given here."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    environ.update({"PYTHONPATH": str(ROOT), "AIDD_CONFIG": str(config), **env})
    if database_url:
        environ["DATABASE_URL"] = database_url
    return subprocess.run(args, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120, check=False)


def aidd_db(*args: str, url: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "aiddclient.cli", "db", *args], url, tmp_path)


def tables(url: str) -> set[str]:
    engine = sync_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database: str, tmp_path: Path) -> None:
    """`aidd db upgrade`, `current`, `history`, `downgrade base`, `upgrade` again: each does what it says, and the
    schema comes back whole."""
    assert aidd_db("current", url=database, tmp_path=tmp_path).stdout.strip() == ""
    up = aidd_db("upgrade", url=database, tmp_path=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "Running upgrade" in up.stderr
    assert aidd_db("current", url=database, tmp_path=tmp_path).stdout.strip() == f"{head_revision()} (head)"
    history = aidd_db("history", url=database, tmp_path=tmp_path).stdout
    assert "<base> -> 0001" in history and f"-> {head_revision()} (head)" in history
    assert {"tasks", "attempts", "workers"} <= tables(database)
    down = aidd_db("downgrade", "base", url=database, tmp_path=tmp_path)
    assert down.returncode == 0, down.stderr
    assert tables(database) <= {"alembic_version"}
    assert aidd_db("upgrade", url=database, tmp_path=tmp_path).returncode == 0
    assert {"tasks", "attempts", "workers"} <= tables(database)


def test_stock_alembic_cli_and_offline_sql(database: str, tmp_path: Path) -> None:
    """The stock `alembic -c <shipped alembic.ini>` works on the configured database (`aidd db ini` names the file);
    `aidd db sql` writes the upgrade's SQL without any database."""
    ini = aidd_db("ini", url=None, tmp_path=tmp_path).stdout.strip()
    assert Path(ini) == ALEMBIC_INI and ALEMBIC_INI.is_file()
    up = run([str(BIN / "alembic"), "-c", ini, "upgrade", "0001"], database, tmp_path)
    assert up.returncode == 0, up.stderr
    assert run([str(BIN / "alembic"), "-c", ini, "current"], database, tmp_path).stdout.strip() == "0001"
    assert run([str(BIN / "alembic"), "-c", ini, "upgrade", "head"], database, tmp_path).returncode == 0
    sql = aidd_db("sql", url=None, tmp_path=tmp_path)
    assert sql.returncode == 0, sql.stderr
    assert "CREATE TABLE tasks" in sql.stdout and "COMMIT;" in sql.stdout
    step = aidd_db("sql", "0001:head", url=None, tmp_path=tmp_path).stdout
    assert "CREATE TABLE tasks" not in step and "ALTER TABLE tasks" in step


def test_db_errors_are_one_line(tmp_path: Path, database: str) -> None:
    """No database configured, an unknown revision, an unreachable server: one line each, exit 2."""
    unknown = aidd_db("downgrade", "nosuch", url=database, tmp_path=tmp_path)
    for done, expected in [
        (aidd_db("current", url=None, tmp_path=tmp_path), "aidd: database_url: not set"),
        (unknown, "aidd: db downgrade: Can't locate revision identified by 'nosuch'"),
        (aidd_db("current", url="postgresql://u:pw@127.0.0.1:1/x", tmp_path=tmp_path),
         "aidd: DATABASE_URL: PostgreSQL at 127.0.0.1:1/x cannot be used: "),
    ]:
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), done.stderr


def test_no_migration_at_start_refuses_an_old_schema(database: str, servers: tuple[str, str], tmp_path: Path) -> None:
    """With `migrate_on_start: false` the coordinator leaves the schema alone: on a database one revision behind it
    stops with one line and exit 2, and the schema is still behind."""
    assert aidd_db("upgrade", "0001", url=database, tmp_path=tmp_path).returncode == 0
    done = run([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", "0"], database, tmp_path,
               REDIS_URL=servers[0], AIDD_MIGRATE_ON_START="false", AIDD_KEY_PREFIX=f"t{uuid.uuid4().hex[:10]}",
               AIDD_STATE_DIR=str(tmp_path / "state"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"aidd: DATABASE_URL: the schema of {make_url(database).host}:{make_url(database).port}/"
        f"{make_url(database).database} is at revision 0001, this coordinator needs {head_revision()}: run "
        "`aidd db upgrade` (or set migrate_on_start)"]
    assert aidd_db("current", url=database, tmp_path=tmp_path).stdout.strip() == "0001"


def test_a_newer_schema_is_current_for_an_older_coordinator(database: str, tmp_path: Path) -> None:
    """During a rolling upgrade the new release migrates first: a revision this code does not know is a newer one
    (migrations only add), accepted at start and by /readyz; one it knows short of its newest is behind."""
    assert aidd_db("upgrade", url=database, tmp_path=tmp_path).returncode == 0
    with sync_engine(make_url(database).set(drivername="postgresql+psycopg")).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_a_newer_release'"))

    async def check() -> None:
        engine = create_engine(database)
        try:
            await check_schema(engine, "DATABASE_URL", "db")  # no SchemaOutOfDate
        finally:
            await engine.dispose()
    asyncio.run(check())
    assert schema_is_current("0099_from_a_newer_release") and schema_is_current(head_revision())
    assert not schema_is_current("0001") and not schema_is_current(None)


def test_the_newest_revision_is_alembics_head_and_a_start_needs_no_alembic() -> None:
    """The start's check (is the schema newest?) reads the newest revision from the migration files' names, as
    Alembic's head; importing the server does not import Alembic (with Mako and Pygments: a quarter second)."""
    assert newest_revision() == head_revision()
    probe = ("import sys, coordinator.server; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'mako'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
