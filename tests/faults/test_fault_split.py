"""Mixed-store starts beside a live coordinator: only a Redis URL, only a database URL, another database, another
file store. Each real `aidd --serve` exits 2 with one line, and the shared prefix is as it was (issue 11, item 5)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator.keys import Keys
from tests.faults.cluster import Cluster
from tests.faults.processes import ROOT, clean_env

pytestmark = pytest.mark.slow
PENDING = 20
"""Tasks waiting in the live coordinator's queues (no agent runs them) while the refused starts try."""


def snapshot(client: redis.Redis, keys: Keys) -> dict[bytes, Any]:
    """The prefix's keys and their content. The leader lease and the live coordinator's own entry change by
    themselves (lease renewal, refresh), so only their presence and the coordinators' names are compared."""
    volatile = {keys.leader.encode(), keys.coordinators.encode()}
    found: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
        kind = client.type(key)
        if key == keys.coordinators.encode():
            found[key] = sorted(client.hkeys(key))
        elif key in volatile:
            found[key] = kind
        elif kind == b"string":
            found[key] = client.get(key)
        elif kind == b"hash":
            found[key] = client.hgetall(key)
        elif kind == b"set":
            found[key] = sorted(client.smembers(key))
        elif kind == b"zset":
            found[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            found[key] = client.lrange(key, 0, -1)
    return found


def serve(work: Path, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m aiddclient.cli --serve` with exactly these settings, to its end (or 60 s)."""
    config = work / "empty.yml"
    config.write_text("{}\n")
    env = clean_env({"AIDD_CONFIG": str(config), "AIDD_PORT": "0", **settings})
    return subprocess.run([sys.executable, "-m", "aiddclient.cli", "--serve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_mixed_store_starts_are_refused_and_write_nothing(cluster: Any, tmp_path: Path) -> None:
    """Beside a live coordinator holding 20 pending tasks: (a) only AIDD_REDIS_URL, (b) only AIDD_DATABASE_URL,
    (c) both URLs but another database, (d) both right but a state directory (so a local file store) of its own.
    Each exits 2 with one line naming the problem, no traceback; the shared prefix's keys and their content are
    unchanged (the leader lease's value and the live coordinator's refresh time aside), and the live
    coordinator still answers."""
    system: Cluster = cluster()
    live = system.coordinator()
    system.submit([system.task(1.0) for _ in range(PENDING)])
    keys = Keys(system.settings["AIDD_KEY_PREFIX"])
    shared = {k: system.settings[k] for k in ("AIDD_REDIS_URL", "AIDD_DATABASE_URL", "AIDD_KEY_PREFIX")}
    other_database = system.stores.database(f"other{uuid.uuid4().hex[:8]}")
    starts = {
        "only a Redis URL": ({"AIDD_REDIS_URL": shared["AIDD_REDIS_URL"], "AIDD_KEY_PREFIX": keys.prefix,
                              "AIDD_STATE_DIR": str(tmp_path / "a")}, "AIDD_REDIS_URL is set but no database is"),
        "only a database URL": ({"AIDD_DATABASE_URL": shared["AIDD_DATABASE_URL"], "AIDD_KEY_PREFIX": keys.prefix,
                                 "AIDD_STATE_DIR": str(tmp_path / "b")}, "AIDD_DATABASE_URL is set but no Redis is"),
        "another database": ({**shared, "AIDD_DATABASE_URL": other_database,
                              "AIDD_STATE_DIR": system.settings["AIDD_STATE_DIR"]},
                             "is the index of another PostgreSQL database"),
        "another file store": ({**shared, "AIDD_STATE_DIR": str(tmp_path / "d")}, "with a different file store"),
    }
    with system.stores.redis() as client:
        before = snapshot(client, keys)
        assert len(client.zrange(keys.pending, 0, -1)) == PENDING
        for name, (settings, words) in starts.items():
            done = serve(tmp_path, settings)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2, f"{name}: {done.stderr}"
            assert len(lines) == 1 and lines[0].startswith("aidd: ") and words in lines[0], f"{name}: {done.stderr}"
            assert "Traceback" not in done.stderr + done.stdout, name
            assert snapshot(client, keys) == before, f"{name}: the shared prefix changed"
    assert not (tmp_path / "a" / "postgres").exists()  # refused before an embedded PostgreSQL was started
    assert not (tmp_path / "b" / "redis").exists()
    assert live.health() == 200
