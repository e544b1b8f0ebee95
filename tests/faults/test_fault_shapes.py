"""Resource shapes used once cost nothing later: 20 000 historical shapes (tasks submitted and cancelled, each
asking for a CPU amount of its own, in the agents' own group) leave submissions, claims and a drain where they
were without them, and no Redis command stalls the server.

Claims are timed by Redis itself: the slowlog, with its threshold at 0, holds every command of a drain with
its duration (Redis 6.2 also logs the commands scripts call), and the claim script's calls are picked out by
its SHA.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from coordinator.keys import Keys
from coordinator.queue import _script_source
from tests.faults.cluster import Cluster
from tests.faults.processes import Stores
from tests.faults.truth import Figures
from tests.support.api import Api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
SHAPES = 20_000
ROUND = 500
"""Historical tasks submitted, then cancelled, at a time (below max_queue_shapes: every round is let in)."""
DRAIN = 500
SINGLES = 20
"""One-task submissions timed before each drain (their tasks drain too)."""
SLOWLOG_LEN = 200_000
CLAIM_SHA = hashlib.sha1(_script_source("claim").encode()).hexdigest().encode()
"""The claim script as EVALSHA names it, to pick its calls out of the slowlog."""


def noop(i: int) -> dict[str, Any]:
    return {"service": "shapes", "task_type": "noop", "name": f"noop {i}", "resources": {"cpu": 0}}


def historical(i: int) -> dict[str, Any]:
    """A task of a shape of its own (5000.0001, 5000.0002, ... CPUs): no worker has the cores, so it stays queued
    in the agents' group, read by each of their claims, until it is cancelled."""
    return {"service": "history", "task_type": "noop", "name": f"shape {i}", "resources": {"cpu": 5000 + (i + 1) / 1e4}}


@dataclass(frozen=True)
class Drain:
    """What one drain of DRAIN + SINGLES noop tasks cost."""

    submit_p50_ms: float
    drain_s: float
    claim_p50_us: float
    claim_max_us: int
    claims: int
    commands: int
    slowest_us: int
    slowest: str

    def text(self) -> str:
        commands = f"{self.commands}{'+' if self.commands >= SLOWLOG_LEN else ''}"  # + : the log was full
        return (f"submit p50 {self.submit_p50_ms:.1f} ms, drain {self.drain_s:.2f} s, claim p50 "
                f"{self.claim_p50_us:.0f} us max {self.claim_max_us} us ({self.claims} claims), slowest of "
                f"{commands} commands {self.slowest_us / 1000:.1f} ms ({self.slowest})")


@contextmanager
def every_command_logged(client: redis.Redis) -> Iterator[None]:
    """The slowlog keeps every command (threshold 0) from an empty start; the server's settings come back after,
    and the log is emptied again (so the next reset has little to free)."""
    saved = client.config_get("slowlog-*")
    client.config_set("slowlog-max-len", SLOWLOG_LEN)
    client.slowlog_reset()
    client.config_set("slowlog-log-slower-than", 0)
    try:
        yield
    finally:
        for name, value in saved.items():
            client.config_set(name, value)
        client.slowlog_reset()


def drain(system: Cluster, api: Api, client: redis.Redis) -> Drain:
    """Time SINGLES one-task submissions, then run them and DRAIN more to the end; the slowlog says what claims
    and every other command (but the test's own) cost meanwhile."""
    target = system.count("succeeded") + SINGLES + DRAIN
    with every_command_logged(client):
        started = time.monotonic()
        singles = []
        for i in range(SINGLES):
            sent = time.monotonic()
            system.submit([noop(i)], api)
            singles.append(time.monotonic() - sent)
        system.submit([noop(i) for i in range(DRAIN)], api)
        wait_until(lambda: system.count("succeeded") >= target, 60, f"{DRAIN + SINGLES} noop tasks to succeed", 0.05)
        elapsed = time.monotonic() - started
        log = [e for e in client.slowlog_get(SLOWLOG_LEN) if not e["command"].startswith((b"SLOWLOG", b"CONFIG"))]
    claims = [int(e["duration"]) for e in log if e["command"].split(b" ")[:2] == [b"EVALSHA", CLAIM_SHA]]
    slowest = max(log, key=lambda e: int(e["duration"]))
    return Drain(statistics.median(singles) * 1000, elapsed, statistics.median(claims), max(claims), len(claims),
                 len(log), int(slowest["duration"]), slowest["command"][:60].decode(errors="replace"))


def make_history(system: Cluster, api: Api) -> float:
    """Submit and cancel SHAPES tasks of distinct shapes, ROUND at a time; returns the seconds it took."""
    started = time.monotonic()
    for start in range(0, SHAPES, ROUND):
        ids = system.submit([historical(i) for i in range(start, start + ROUND)], api)
        cancelled = api.http.post("/api/v1/tasks/bulk/cancel", json={"ids": ids})
        assert cancelled.status_code == 200, cancelled.text
    return time.monotonic() - started


def test_historical_shapes_cost_nothing(cluster: Callable[..., Cluster], record: Callable[[Figures], None],
                                        stores: Stores) -> None:
    """A drain of 520 noop tasks by two agents (after one to warm up), before and after 20 000 resource shapes came
    and went in their group: claims, submissions and the drain stay within 2x of the first run, no shape is left
    in the registry, and no Redis command takes 50 ms."""
    system = cluster()
    system.coordinator()
    api = system.api()
    for name in ("n1", "n2"):
        system.agent(name, 8)
    client = stores.redis()
    keys = Keys(system.settings["AIDD_KEY_PREFIX"])
    drain(system, api, client)  # warm-up: freshly started processes are slow at first
    before = drain(system, api, client)
    history_s = make_history(system, api)
    left = client.hlen(keys.queues("default"))
    after = drain(system, api, client)
    client.close()
    note = (f"{SHAPES} shapes made in {history_s:.1f} s, {left} left registered; before: {before.text()}; "
            f"after: {after.text()}")
    print(note)
    record(system.figures("20 000 historical resource shapes", records=False, note=note))
    assert left == 0
    assert after.claim_p50_us <= 2 * before.claim_p50_us + 50, note  # + 50 us: scheduling noise on tiny calls
    assert after.drain_s <= 2 * before.drain_s + 1, note
    assert after.submit_p50_ms <= 3 * before.submit_p50_ms + 10, note  # a commit each: noisier than claims
    assert max(before.slowest_us, after.slowest_us) < 50_000, note
