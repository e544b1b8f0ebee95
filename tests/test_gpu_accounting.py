"""GPU accounting over the real API: which task holds which GPU, allocated vs busy, and allocated GPUs flagged idle.

Heartbeats carry the readings of `FakeGpus` (the agent's fake NVML layer), with the utilisation each test sets;
one test runs a real agent on the real NVML path where a GPU is there.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.gpus import GpuHold, idle_seconds
from coordinator.server import BackgroundServer
from nodeagent.gpu import FakeGpus, GpuInfo
from tests.agent_helpers import AgentProcess
from tests.support.agent import HttpAgent
from tests.support.api import Api
from tests.support.tasks import task_body
from tests.support.waiting import wait_until
from tests.test_agent_e2e import real_gpus

__all__ = ["real_gpus"]  # the fixture, used by name

IDLE_AFTER = 3.0


@pytest.fixture
def gpu_client(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[httpx.Client]:
    """The API with a short idle period (IDLE_AFTER seconds below the default 5 % threshold)."""
    server = BackgroundServer(settings.model_copy(update={"port": 0, "gpu_idle_after": IDLE_AFTER}),
                              timers=False).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    server.stop()


def beat(agent: HttpAgent, gpus: FakeGpus, *tasks: str) -> None:
    """One heartbeat with the fake GPUs' readings now."""
    reply = agent.post("heartbeat", {"gpus": gpus.usage(), "current_tasks": list(tasks)})
    assert reply.status_code == 200, reply.text


def gpu_rows(client: httpx.Client, agent: HttpAgent) -> dict[int, dict[str, Any]]:
    worker = client.get(f"/api/v1/workers/{agent.id}").json()
    return {g["index"]: g for g in worker["gpus"]}


def totals(client: httpx.Client) -> tuple[int, int, int, int]:
    stats = client.get("/api/v1/workers/stats").json()
    return stats["gpus"], stats["allocated_gpus"], stats["busy_gpus"], stats["idle_gpus"]


def test_each_gpu_names_its_task_and_allocated_busy_idle_are_counted_apart(gpu_client: httpx.Client) -> None:
    client = gpu_client
    gpus = FakeGpus([{"name": "A100", "memory_gb": 80}, {"name": "A100", "memory_gb": 80},
                     {"name": "A100", "memory_gb": 80}])
    agent = HttpAgent.register(client, hostname="gpu-host", gpus=[g.as_dict() for g in gpus.inventory()],
                               cpu_cores=8)
    ids = [client.post("/api/v1/tasks", json=task_body(name=name, resources={"gpu": 1})).json()["id"]
           for name in ("dock EGFR", "stuck loader")]
    leased = {t["task_id"]: t for t in agent.lease(2)}
    working, stuck = (leased[i]["gpus"][0] for i in ids)
    spare = ({0, 1, 2} - {working, stuck}).pop()
    gpus.gpus[working]["utilization"] = 93.0
    gpus.gpus[stuck]["utilization"] = 1.0
    gpus.gpus[spare]["utilization"] = 40.0  # busy with something the coordinator did not place there
    beat(agent, gpus, *ids)

    rows = gpu_rows(client, agent)
    assert rows[working]["tasks"] == [{"task_id": ids[0], "name": "dock EGFR", "attempt": 1}]
    assert rows[stuck]["tasks"] == [{"task_id": ids[1], "name": "stuck loader", "attempt": 1}]
    assert rows[spare]["tasks"] == [] and not rows[spare]["allocated"] and rows[spare]["busy"]
    assert rows[working]["utilization"] == 93.0 and rows[working]["memory_total_gb"] == 80
    assert rows[stuck]["allocated"] and not rows[stuck]["busy"] and not rows[stuck]["idle"]  # not for long enough
    assert totals(client) == (3, 2, 2, 0)

    time.sleep(IDLE_AFTER + 0.2)
    beat(agent, gpus, *ids)
    rows = gpu_rows(client, agent)
    assert rows[stuck]["idle"] and rows[stuck]["idle_s"] >= IDLE_AFTER
    assert not rows[working]["idle"] and not rows[spare]["idle"]  # busy; and unallocated
    assert totals(client) == (3, 2, 2, 1)
    stuck_task = client.get(f"/api/v1/tasks/{ids[1]}").json()
    assert [(g["index"], g["idle"]) for g in stuck_task["gpu_use"]] == [(stuck, True)]
    assert stuck_task["worker_hostname"] == "gpu-host"
    assert [g["idle"] for g in client.get(f"/api/v1/tasks/{ids[0]}").json()["gpu_use"]] == [False]

    gpus.gpus[stuck]["utilization"] = 60.0  # it woke up: busy now, and the quiet period starts again from here
    beat(agent, gpus, *ids)
    gpus.gpus[stuck]["utilization"] = 0.0
    beat(agent, gpus, *ids)
    assert not gpu_rows(client, agent)[stuck]["idle"]

    assert agent.report(leased[ids[0]], "succeeded").status_code == 200
    rows = gpu_rows(client, agent)
    assert rows[working]["tasks"] == [] and not rows[working]["allocated"] and rows[working]["busy"]
    assert totals(client) == (3, 1, 2, 0)
    assert client.get(f"/api/v1/tasks/{ids[0]}").json()["gpu_use"] == []

    assert client.delete(f"/api/v1/workers/{agent.id}").status_code == 200  # offline: its GPUs count no more
    rows = gpu_rows(client, agent)
    assert "utilization" not in rows[working] and not rows[working]["busy"]  # stale readings are not shown as live
    assert totals(client) == (0, 0, 0, 0)


def test_gpu_shares_of_one_gpu_are_listed_together(gpu_client: httpx.Client) -> None:
    client = gpu_client
    gpus = FakeGpus([{"name": "T4", "memory_gb": 16}])
    agent = HttpAgent.register(client, hostname="share-host", gpus=[g.as_dict() for g in gpus.inventory()])
    ids = [client.post("/api/v1/tasks", json=task_body(name=f"half {i}", resources={"gpu": 0.5})).json()["id"]
           for i in range(2)]
    assert sorted(t["task_id"] for t in agent.lease(2)) == sorted(ids)
    beat(agent, gpus, *ids)
    [row] = gpu_rows(client, agent).values()
    assert sorted(t["name"] for t in row["tasks"]) == ["half 0", "half 1"] and row["allocated"]
    assert totals(client) == (1, 1, 0, 0)


def test_idle_is_counted_from_the_later_of_the_last_busy_beat_and_the_newest_task() -> None:
    settings = Settings(gpu_idle_threshold=5, gpu_idle_after=60)
    hold = GpuHold(share=1.0, since=1000.0, tasks=[{"task_id": "t"}])
    assert idle_seconds(1.0, hold, None, 1059.0, settings) is None
    assert idle_seconds(1.0, hold, None, 1060.0, settings) == 60.0
    assert idle_seconds(1.0, hold, 1050.0, 1100.0, settings) is None  # busy 50 s ago
    assert idle_seconds(1.0, hold, 900.0, 1100.0, settings) == 100.0  # busy before this task began
    assert idle_seconds(5.0, hold, None, 2000.0, settings) is None  # at the threshold: busy
    assert idle_seconds(None, hold, None, 2000.0, settings) is None  # no reading (offline)
    assert idle_seconds(0.0, None, None, 2000.0, settings) is None  # not allocated
    assert idle_seconds(0.0, GpuHold(), None, 2000.0, settings) is None


def test_lease_without_a_free_list_skips_what_running_tasks_hold() -> None:
    """The share accounting the lease uses is the same one the views use."""
    from coordinator.gpus import holds

    rows = [SimpleNamespace(gpus=[0], gpu=0.25, gpu_memory_gb=4.0), SimpleNamespace(gpus=[0], gpu=0.5,
                                                                                   gpu_memory_gb=2.0),
            SimpleNamespace(gpus=[1, 2], gpu=1.5, gpu_memory_gb=0.0)]
    held = holds(rows)
    assert (held[0].share, held[0].memory_gb) == (0.75, 6.0)
    assert held[1].share == held[2].share == 1.0 and held[0].tasks == []


@pytest.mark.slow
def test_a_real_gpu_allocated_but_unused_is_flagged_idle(real_gpus: list[GpuInfo], settings: Settings,
                                                         clean_db: None, redis: SyncRedis, tmp_path: Path) -> None:
    """The real NVML path (skipped where NVML sees no GPU): a real agent runs a one-GPU task that never touches
    its GPU; its heartbeats' readings leave the GPU below the threshold, so it is flagged idle."""
    server = BackgroundServer(settings.model_copy(update={"port": 0, "heartbeat_timeout": 3.0,
                                                          "lease_max_wait": 2.0, "gpu_idle_after": 2.0}),
                              timers=True).start()
    agent = AgentProcess(server.url, tmp_path, "idle-gpu-node", "--group", "gpu")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http)
            wait_until(lambda: api.worker("idle-gpu-node"), 20, "the agent to register")
            task_id = api.submit(group="gpu", resources={"gpu": 1}, input_params={"argv": ["sleep", "60"]},
                                 timeout_s=120)
            task = wait_until(lambda: (t := api.task(task_id))["gpu_use"] and t["gpu_use"][0]["idle"] and t, 30,
                            "its GPU to be flagged idle")
            [gpu] = task["gpu_use"]
            assert gpu["index"] == task["gpus"][0] and gpu["allocated"] and not gpu["busy"]
            assert gpu["name"] == real_gpus[gpu["index"]].name and gpu["utilization"] < 5
            worker = api.worker("idle-gpu-node")
            assert worker is not None
            [row] = [g for g in worker["gpus"] if g["index"] == gpu["index"]]
            assert row["idle"] and [t["task_id"] for t in row["tasks"]] == [task_id]
            stats = http.get("/api/v1/workers/stats").json()
            assert (stats["gpus"], stats["allocated_gpus"], stats["idle_gpus"]) == (len(real_gpus), 1, 1)
            assert http.delete(f"/api/v1/tasks/{task_id}").status_code == 200
    finally:
        agent.stop(signal.SIGTERM)
        server.stop()


SHARE_CASES = [  # (what each task asks, the free share of each GPU, how many of 8 such tasks one claim takes)
    (0.25, [1.0], 4),
    (0.3, [1.0], 3),
    (0.5, [1.0, 0.5], 3),
    (0.5, [0.4], 0),
    (0.75, [1.0, 1.0], 2),
    (1.0, [1.0, 0.5, 1.0], 2),
    (1.0, [0.99], 0),
    (2.0, [1.0, 1.0, 1.0, 0.9], 1),
]


@pytest.mark.anyio
@pytest.mark.parametrize("chunk", [8, 1])
@pytest.mark.parametrize(("asked", "free", "taken"), SHARE_CASES)
async def test_the_claim_script_hands_out_gpu_shares_as_python_counts_them(
        settings: Settings, redis: SyncRedis, monkeypatch: pytest.MonkeyPatch, asked: float, free: list[float],
        taken: int, chunk: int) -> None:
    """`claim.lua`'s `pick_gpus` (Lua, so it cannot import the rule) agrees with `aiddwire.gpu_share`: what it hands
    out, counted by Python, fits each GPU's free share, and what is left takes no further task of that size. So
    too when the claim takes one task a script call, each call starting from the shares the last one left."""
    from redis.asyncio import Redis

    from aiddwire import gpu_share
    from coordinator import queue
    from coordinator.keys import Keys
    from coordinator.queue import ClaimRequest, GpuFree, QueuedTask, QueueIndex

    monkeypatch.setattr(queue, "CLAIM_CHUNK", chunk)

    client, keys = Redis.from_url(settings.redis_url or ""), Keys(settings.key_prefix)
    try:
        index = QueueIndex(client, keys)
        await client.hset(keys.worker("w"), "status", "online")
        await index.put_pending([QueuedTask(f"t{i}", "svc", "default", 0, i, gpu=asked) for i in range(8)])
        claims = await index.claim(ClaimRequest(worker="w", groups=["default"], max_tasks=8,
                                                gpus=[GpuFree(i, f) for i, f in enumerate(free)]),
                                   [f"a{i}" for i in range(8)])
    finally:
        await client.aclose()
    assert len(claims) == taken
    left = list(free)
    for claim in claims:
        for gpu in claim.gpus:
            left[gpu] -= gpu_share(asked, len(claim.gpus))
    assert all(share >= -1e-9 for share in left), left
    whole = math.ceil(asked) if asked >= 1 else 1
    share = gpu_share(asked, whole)
    assert sum(1 for s in left if s + 1e-9 >= share) < whole, f"Python counts room for another: {left}"
