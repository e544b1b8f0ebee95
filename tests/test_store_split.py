"""No silent split of the stores: a half-external setup, a Redis prefix bound to another database, and a second
coordinator with another file store are each refused in one line, before anything is written to the shared Redis;
coordinators sharing one files directory, or beside a dead one, start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings, load_settings
from coordinator.errors import ConfigError, StoresMismatch
from coordinator.keys import Keys
from coordinator.peers import REFRESH_S, STALE_S, redis_address
from coordinator.runtime import check_shared_stores, embedded_parts
from coordinator.service import Coordinator
from coordinator.storage import LocalStore, open_store
from tests.helpers import configured
from tests.support.waiting import await_until

ROOT = Path(__file__).resolve().parent.parent
FOREIGN_ENV = ("AIDD_", "REDIS_URL", "DATABASE_URL", "POSTGRES_", "MINIO_")


def parts(tmp_path: Path, env: dict[str, str], config: str = "") -> set[str]:
    """What `stores()` would embed for this environment and config file (it starts nothing)."""
    path = tmp_path / "aidd.yml"
    path.write_text(config)
    return set(embedded_parts(load_settings(path, env=env)))


def refusal(tmp_path: Path, env: dict[str, str], config: str = "") -> str:
    with pytest.raises(ConfigError) as error:
        parts(tmp_path, env, config)
    assert "\n" not in str(error.value)
    return str(error.value)


def prefix_keys(redis: SyncRedis, prefix: str) -> dict[bytes, Any]:
    """Every key of a prefix with its content (hash fields, string values), to see that nothing was written."""
    found: dict[bytes, Any] = {}
    for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        kind = redis.type(key)
        found[key] = redis.hgetall(key) if kind == b"hash" else redis.get(key) if kind == b"string" else kind
    return found


# -- a half-external setup ------------------------------------------------------------------------------------


def test_only_a_redis_url_is_refused_naming_the_variable_set(tmp_path: Path) -> None:
    """Only a Redis URL: refused, naming the variable (or config key) the operator set and the ways out."""
    message = refusal(tmp_path, {"REDIS_URL": "redis://shared:6379/0"})
    assert message.startswith("REDIS_URL is set but no database is: set DATABASE_URL")
    assert "AIDD_EMBEDDED=postgres" in message
    assert refusal(tmp_path, {"AIDD_REDIS_URL": "redis://shared:6379/0"}).startswith("AIDD_REDIS_URL is set")
    from_file = refusal(tmp_path, {}, "redis_url: redis://shared:6379/0\n")
    assert from_file.startswith(f"redis_url in {tmp_path / 'aidd.yml'} is set")


def test_only_a_database_url_is_refused(tmp_path: Path) -> None:
    """Only a database URL (DATABASE_URL or POSTGRES_*): refused, pointing at REDIS_URL and AIDD_EMBEDDED=redis."""
    message = refusal(tmp_path, {"DATABASE_URL": "postgresql://db/aidd"})
    assert message.startswith("DATABASE_URL is set but no Redis is: set REDIS_URL")
    assert "AIDD_EMBEDDED=redis" in message
    assert refusal(tmp_path, {"POSTGRES_HOST": "db"}).startswith("POSTGRES_* is set but no Redis is")


def test_embedded_opt_in_allows_the_mix_it_names(tmp_path: Path) -> None:
    """AIDD_EMBEDDED names the store to embed beside the external one; no URL embeds both, both URLs none; a
    store named embedded whose URL is set too is refused."""
    assert parts(tmp_path, {"REDIS_URL": "redis://shared/0", "AIDD_EMBEDDED": "postgres"}) == {"postgres"}
    assert parts(tmp_path, {"DATABASE_URL": "postgresql://db/aidd"}, "embedded: [redis]\n") == {"redis"}
    assert parts(tmp_path, {}) == {"redis", "postgres"}
    assert parts(tmp_path, {"REDIS_URL": "redis://shared/0", "DATABASE_URL": "postgresql://db/aidd"}) == set()
    both = refusal(tmp_path, {"REDIS_URL": "redis://r/0", "DATABASE_URL": "postgresql://db/a",
                              "AIDD_EMBEDDED": "postgres"})
    assert both == "embedded: postgres is to run embedded but DATABASE_URL is set too; drop one"
    with pytest.raises(ConfigError, match=r"^AIDD_EMBEDDED: "):
        parts(tmp_path, {"AIDD_EMBEDDED": "mysql"})


def test_serve_with_only_a_redis_url_exits_2_and_writes_nothing(servers: tuple[str, str], tmp_path: Path) -> None:
    """`REDIS_URL=… aidd --serve`: exit 2, one line naming DATABASE_URL, no traceback, no embedded PostgreSQL
    started, and not one key written to that Redis."""
    redis_url, _ = servers
    prefix = f"t{uuid.uuid4().hex[:10]}"
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.update({"PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "AIDD_CONFIG": str(config),
                "AIDD_KEY_PREFIX": prefix, "AIDD_STATE_DIR": str(tmp_path / "state")})
    with SyncRedis.from_url(redis_url) as redis:
        before = redis.dbsize()
        done = subprocess.run([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", "0"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert (redis.dbsize(), list(redis.scan_iter(match=f"{prefix}:*"))) == (before, [])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "aidd: REDIS_URL is set but no database is: set DATABASE_URL (or AIDD_DATABASE_URL / POSTGRES_* / "
        "DB_HOST / database_url) too, or AIDD_EMBEDDED=postgres to run an embedded PostgreSQL beside that "
        "Redis"], done.stderr
    assert not (tmp_path / "state" / "postgres").exists()


# -- an index belongs to one database -------------------------------------------------------------------------


async def refused_start(settings: Settings, redis: SyncRedis) -> str:
    """Start a coordinator that must be refused; its message, after checking it wrote nothing."""
    before = prefix_keys(redis, settings.key_prefix)
    service = Coordinator.build(settings)
    try:
        with pytest.raises(StoresMismatch) as error:
            await service.start(timers=False)
    finally:
        await service.stop()
    assert prefix_keys(redis, settings.key_prefix) == before
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.anyio
async def test_a_prefix_bound_to_another_database_is_refused(settings: Settings, clean_db: None,
                                                             redis: SyncRedis) -> None:
    """The first start binds the prefix to its database; a start on another database is refused before the
    index is rebuilt (no `index_built`), naming the prefix and both databases; the early check says the same."""
    keys = Keys(settings.key_prefix)
    redis.set(keys.database, "1234/elsewhere")
    message = await refused_start(settings, redis)
    assert message.startswith(f"Redis prefix '{settings.key_prefix}' at {redis_address(settings.redis_url or '')} ")
    assert "is the index of another PostgreSQL database ('elsewhere' on server 1234; this one is " in message
    assert "use another key_prefix or the same database" in message
    assert not redis.exists(keys.index_built)
    with pytest.raises(StoresMismatch, match="is the index of another PostgreSQL database"):
        await asyncio.to_thread(check_shared_stores, settings)  # it runs its own event loop
    redis.delete(keys.database)
    service = Coordinator.build(settings)
    await service.start(timers=False)
    try:
        system, _, name = redis.get(keys.database).decode().partition("/")
        assert system.isdigit() and name
    finally:
        await service.stop()


@pytest.mark.anyio
async def test_an_embedded_redis_follows_its_database(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """With an embedded Redis the index is this coordinator's alone: a binding to another database (an embedded
    PostgreSQL created anew) is replaced, not refused."""
    keys = Keys(settings.key_prefix)
    redis.set(keys.database, "1234/elsewhere")
    service = Coordinator.build(configured(settings, embedded=["redis", "postgres"]))
    await service.start(timers=False)
    try:
        assert redis.get(keys.database) != b"1234/elsewhere"
    finally:
        await service.stop()


# -- several coordinators need one file store -----------------------------------------------------------------


@pytest.mark.anyio
async def test_another_file_store_beside_a_live_coordinator_is_refused(coordinator: Coordinator, settings: Settings,
                                                                       redis: SyncRedis, tmp_path: Path) -> None:
    """A second coordinator with a local store of its own (another files directory and key) is refused while the
    first runs, naming it; the early check refuses too."""
    other = configured(settings, state_dir=tmp_path / "elsewhere")
    message = await refused_start(other, redis)
    assert message.startswith(f"another coordinator ({coordinator.peers.entry['host']}, pid {os.getpid()}) serves "
                              f"Redis prefix '{settings.key_prefix}'")
    assert "with a different file store (local:" in message
    assert message.endswith("several coordinators need MinIO/S3 or one shared files directory; "
                            "see README 'Several coordinators'")
    with pytest.raises(StoresMismatch, match="different file store"):
        await asyncio.to_thread(check_shared_stores, other)


@pytest.mark.anyio
async def test_one_shared_files_directory_is_allowed(coordinator: Coordinator, settings: Settings,
                                                     redis: SyncRedis) -> None:
    """A second coordinator on the same files directory (so the same signing key) starts; both are listed while
    they run, and a clean stop removes its entry."""
    await asyncio.to_thread(check_shared_stores, settings)
    second = Coordinator.build(settings)
    await second.start(timers=False)
    coordinators = Keys(settings.key_prefix).coordinators
    try:
        assert set(redis.hkeys(coordinators)) == {coordinator.peers.instance.encode(), second.peers.instance.encode()}
        entry = json.loads(redis.hget(coordinators, second.peers.instance))
        assert entry["pid"] == os.getpid() and entry["file_store"] == coordinator.peers.store.identity
    finally:
        await second.stop()
    assert set(redis.hkeys(coordinators)) == {coordinator.peers.instance.encode()}


@pytest.mark.anyio
async def test_a_stale_registration_is_ignored_and_dropped(settings: Settings, clean_db: None,
                                                           redis: SyncRedis) -> None:
    """An entry not refreshed for STALE_S (a coordinator killed with its own file store) does not block a start,
    and the start drops it."""
    coordinators = Keys(settings.key_prefix).coordinators
    dead = {"host": "gone", "pid": 1, "file_store": "local:0000000000000000", "seen": time.time() - STALE_S - 1}
    redis.hset(coordinators, "dead", json.dumps(dead))
    service = Coordinator.build(settings)
    await service.start(timers=False)
    try:
        assert redis.hkeys(coordinators) == [service.peers.instance.encode()]
    finally:
        await service.stop()


@pytest.mark.anyio
async def test_a_running_coordinator_refreshes_its_entry_and_binding(coordinator: Coordinator, settings: Settings,
                                                                     redis: SyncRedis) -> None:
    """Every REFRESH_S a running coordinator renews its entry (so it never goes stale while it runs) and binds
    the prefix to its database again once a FLUSHALL took the binding."""
    keys = Keys(settings.key_prefix)
    bound = redis.get(keys.database)
    entry = json.loads(redis.hget(keys.coordinators, coordinator.peers.instance))
    redis.hset(keys.coordinators, coordinator.peers.instance, json.dumps({**entry, "seen": 0}))
    redis.delete(keys.database)

    async def refreshed() -> bool:
        seen = json.loads(redis.hget(keys.coordinators, coordinator.peers.instance))["seen"]
        return seen > time.time() - STALE_S and redis.get(keys.database) == bound
    await await_until(refreshed, timeout=REFRESH_S + 5, what="the entry and the binding to be refreshed")


def test_store_identities(tmp_path: Path) -> None:
    """A local store is known by a digest of its signing key (the same for one directory, never the key itself);
    MinIO/S3 by endpoint and bucket."""
    one = LocalStore(tmp_path / "a" / "files", tmp_path / "a" / "files.key")
    again = LocalStore(tmp_path / "a" / "files", tmp_path / "a" / "files.key")
    other = LocalStore(tmp_path / "b" / "files", tmp_path / "b" / "files.key")
    assert one.identity == again.identity != other.identity
    assert one.secret().decode() not in one.identity
    remote = open_store(Settings(state_dir=tmp_path, minio_endpoint="https://s3.lab:9000", minio_bucket="b1x"))
    assert remote.identity == "s3:https://s3.lab:9000/b1x"


def test_messages_name_redis_without_its_credentials() -> None:
    """A refusal names the Redis it is about, never its password."""
    assert redis_address("redis://:s3cret@cache:6379/0") == "redis://cache:6379"
    assert redis_address("rediss://user:s3cret@cache/1") == "rediss://cache"
    assert redis_address("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock"
