"""Coming from the Workers API: nodes named by their clients (`computer_001`) heartbeat with their name in the
body, appear in the list, and take commands by name; operators clear a node's command queue with DELETE."""

from __future__ import annotations

import time

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.service import Coordinator
from tests.helpers import Agent, serving, started


def test_named_nodes_heartbeat_and_commands(client: httpx.Client) -> None:
    beat = client.post("/api/v1/workers/heartbeat", json={"worker_id": "computer_001", "used_cpu": 2,
                                                           "used_memory_gb": 3.5})
    assert beat.status_code == 200, beat.text
    assert beat.json()["worker_id"] == "computer_001" and beat.json()["commands"] == []
    listed = client.get("/api/v1/workers/")
    assert listed.status_code == 200
    assert [(w["hostname"], w["id"]) for w in listed.json()["items"]] == [("computer_001", beat.json()["id"])]
    assert client.get("/api/v1/workers/computer_001").json()["metrics"]["used_cpu"] == 2

    sent = client.post("/api/v1/workers/computer_001/commands", json={"command": "drain"})
    assert sent.status_code == 201 and sent.json() == {"sent": 1}
    assert [c["command"] for c in client.get("/api/v1/workers/computer_001/commands").json()["items"]] == ["drain"]
    again = client.post("/api/v1/workers/heartbeat", json={"worker_id": "computer_001"}).json()
    assert [c["command"] for c in again["commands"]] == ["drain"] and again["id"] == beat.json()["id"]

    cleared = client.delete("/api/v1/workers/computer_001/commands")
    assert cleared.status_code == 200 and cleared.json() == {"acked": 1}
    assert client.get("/api/v1/workers/computer_001/commands").json()["items"] == []
    assert client.get("/api/v1/workers").json()["items"][0]["hostname"] == "computer_001"  # still one node
    assert client.get("/api/v1/workers/computer_002").status_code == 404
    assert client.post("/api/v1/workers/heartbeat", json={"worker_id": "bad name"}).json()["field"] == "worker_id"
    actions = [a["action"] for a in client.get("/api/v1/audit").json()["items"]]
    assert "worker.clear-commands" in actions


def test_named_heartbeats_need_the_enrollment_token(settings: Settings, clean_db: None) -> None:
    """With keys configured, a node's heartbeat carries the agent token (or an operator key), as enrolling does."""
    with serving(settings, api_keys="operator:op-key-123456", agent_token="agent-token-123456") as (_s, http):
        assert http.post("/api/v1/workers/heartbeat", json={"worker_id": "computer_001"}).status_code == 401
        beat = http.post("/api/v1/workers/heartbeat", json={"worker_id": "computer_001"},
                         headers={"Authorization": "Bearer agent-token-123456"})
        assert beat.status_code == 200
        cleared = http.delete("/api/v1/workers/computer_001/commands",
                              headers={"Authorization": "Bearer op-key-123456"})
        assert cleared.json() == {"acked": 0}


@pytest.mark.anyio
async def test_a_node_beating_every_30_s_does_not_flap(settings: Settings, clean_db: None,
                                                       redis: SyncRedis) -> None:
    """Against a 30 s heartbeat_timeout, a node that beats every 30 s (the Workers API's interval) stays online
    between beats; silent for 2.5 of its gaps it is offline. A worker never seen beating twice keeps the timeout."""
    async with started(settings, heartbeat_timeout=30) as coordinator:
        await beat_every_30_s(coordinator)


async def beat_every_30_s(coordinator: Coordinator) -> None:
    node = str((await Agent.register(coordinator)).id)
    quiet = str((await Agent.register(coordinator)).id)
    now = time.time()
    for at in (now - 65, now - 34):  # a beat every 31 s, the last one 34 s ago
        await coordinator.core.index.heartbeat(node, at, b"{}")
    await coordinator.core.redis.zadd(coordinator.core.keys.heartbeats, {quiet: now - 34})
    assert await coordinator.timers.reap_dead_workers() == 1
    assert [w["status"] for w in await coordinator.workers.overview() if str(w["id"]) == node] == ["online"]
    await coordinator.core.redis.zadd(coordinator.core.keys.heartbeats, {node: now - 80})
    assert await coordinator.timers.reap_dead_workers() == 1
