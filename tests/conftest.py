"""Shared fixtures: real Redis and PostgreSQL (embedded, or AIDD_TEST_REDIS_URL / AIDD_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis
from sqlalchemy import text

from coordinator.config import Settings
from coordinator.db import create_engine, migrate
from coordinator.embedded import EmbeddedServers, start_embedded
from coordinator.models import Base
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from tests.support.ports import free_port


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(redis_url, database_url) for the whole session; embedded servers unless the env names others.

    The state dir is outside pytest's private temp root: as root, PostgreSQL runs as another user
    that must reach it, also while a second pytest session re-locks that root.
    """
    redis_url = os.environ.get("AIDD_TEST_REDIS_URL")
    database_url = os.environ.get("AIDD_TEST_DATABASE_URL")
    embedded: EmbeddedServers | None = None
    if not (redis_url and database_url):
        state = Path(tempfile.mkdtemp(prefix="aidd-test-"))
        embedded = start_embedded(state)
        redis_url = redis_url or embedded.redis_url
        database_url = database_url or embedded.database_url
    asyncio.run(_migrate(database_url))
    yield redis_url, database_url
    if embedded is not None:
        embedded.stop()
        shutil.rmtree(state, ignore_errors=True)


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def settings(servers: tuple[str, str], tmp_path: Path) -> Settings:
    """Settings of one test: its own Redis key prefix, short timers, the session's servers."""
    redis_url, database_url = servers
    return Settings(state_dir=tmp_path, redis_url=redis_url, database_url=database_url,
                    key_prefix=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval=0.5, heartbeat_timeout=2,
                    heartbeat_check_interval=0.2, retry_base_delay=0.2, retry_max_delay=2,
                    reconcile_interval=3600)


@pytest.fixture
def clean_db(servers: tuple[str, str]) -> None:
    """An empty record: every table truncated before the test."""
    asyncio.run(_truncate(servers[1]))


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
def redis(settings: Settings) -> Iterator[SyncRedis]:
    """A (sync) Redis client; the test's keys live under its own prefix and are deleted afterwards."""
    client = SyncRedis.from_url(settings.redis_url or "")
    yield client
    for key in client.scan_iter(match=f"{settings.key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
async def coordinator(settings: Settings, clean_db: None, redis: SyncRedis) -> AsyncIterator[Coordinator]:
    """A started coordinator service (timers off: tests drive them with `timers.tick()`)."""
    service = Coordinator.build(settings)
    await service.start(timers=False)
    yield service
    await service.stop()


@pytest.fixture
def api_server(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[BackgroundServer]:
    """The real API on a free loopback port (uvicorn on a thread); timers off unless a test starts them."""
    server = BackgroundServer(settings.model_copy(update={"port": 0}), timers=False).start()
    yield server
    server.stop()


@pytest.fixture
def client(api_server: BackgroundServer) -> Iterator[httpx.Client]:
    """An HTTP client on the API (keyless loopback mode)."""
    with httpx.Client(base_url=api_server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """`host:port` of a real S3-protocol server for the whole session: moto's stand-alone server on loopback,
    started here and stopped by its pid (it keeps objects in memory; each test uses its own bucket)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"moto server did not start on port {port} (exit code {process.poll()})")
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
