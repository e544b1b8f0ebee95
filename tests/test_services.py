"""The service registry: operators pause and resume services and set their running limits while the cluster
runs; claims follow at once, across coordinators and index rebuilds, and every change is audited."""

from __future__ import annotations

import httpx
import pytest
from redis import Redis as SyncRedis

from aiddclient.cli import main as cli_main
from coordinator.config import Settings
from coordinator.reconcile import rebuild_index
from coordinator.schemas import ServiceChange
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from tests.helpers import Agent, started, submit, submit_one
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio


async def test_a_paused_service_waits_and_resumes_in_order(coordinator: Coordinator) -> None:
    """While `docking` is paused its tasks stay pending (others run); resumed, they leave in their order."""
    docking = await submit(coordinator, 3, service="docking", priority=5)
    admet = await submit_one(coordinator, service="admet")
    await coordinator.services.change("docking", ServiceChange(paused=True), "op")
    agent = await Agent.register(coordinator, cpu_cores=64)
    assert await agent.lease_ids(max_tasks=10) == [admet]
    state = await coordinator.services.state("docking")
    assert state.paused and state.limit is None and state.running == 0
    await coordinator.services.change("docking", ServiceChange(paused=False), "op")
    assert await agent.lease_ids(max_tasks=10) == docking


async def test_a_runtime_limit_overrides_the_configured_one(settings: Settings, clean_db: None,
                                                            redis: SyncRedis) -> None:
    """`max_running` set at run time replaces `service_limits` for that service; null brings it back; both
    outlive an index rebuild (they live in PostgreSQL)."""
    async with started(settings, service_limits={"docking": 1}) as coordinator:
        docking = await submit(coordinator, 4, service="docking")
        agent = await Agent.register(coordinator, cpu_cores=64)
        assert await agent.lease_ids(max_tasks=10) == docking[:1]
        state = await coordinator.services.change("docking", ServiceChange(max_running=3), "op")
        assert (state.limit, state.configured_limit, state.running, state.at_limit) == (3, 1, 1, False)
        await rebuild_index(coordinator.core)
        assert await agent.lease_ids(max_tasks=10) == docking[1:3]
        assert (await coordinator.services.state("docking")).at_limit
        state = await coordinator.services.change("docking", ServiceChange(max_running=None), "op")
        assert state.limit == 1 and state.max_running is None
        await coordinator.services.change("docking", ServiceChange(max_running=0), "op")
        assert (await coordinator.services.state("docking")).limit == 0


async def test_pause_reaches_every_coordinator(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """A pause made through one coordinator holds for claims through another on the same stores."""
    async with started(settings) as first, started(settings) as second:
        task = await submit_one(first, service="docking")
        await first.services.change("docking", ServiceChange(paused=True), "op")
        agent = await Agent.register(second)
        assert await agent.lease_ids() == []
        await second.services.change("docking", ServiceChange(paused=False), "op")
        assert await agent.lease_ids() == [task]


def test_services_over_http(client: httpx.Client) -> None:
    """List, pause, limit and resume through the API; bad names and bodies are 422; the audit records it."""
    client.post("/api/v1/tasks", json=task_body(service="docking"))
    listed = client.get("/api/v1/services").json()["items"]
    assert [(s["name"], s["paused"], s["pending"], s["limit"]) for s in listed] == [("docking", False, 1, None)]
    paused = client.post("/api/v1/services/docking/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True and paused.json()["number"] >= 1
    agent = HttpAgent.register(client)
    assert agent.lease(max_tasks=5) == []
    limited = client.put("/api/v1/services/docking", json={"max_running": 2, "description": "AutoDock Vina"})
    assert limited.json()["paused"] is True and limited.json()["limit"] == 2
    assert client.post("/api/v1/services/docking/resume").json()["paused"] is False
    assert len(agent.lease(max_tasks=5)) == 1
    assert client.get("/api/v1/services/docking").json()["running"] == 1
    assert client.get("/api/v1/services/never-used").json()["paused"] is False
    assert client.put("/api/v1/services/docking", json={}).status_code == 422
    assert client.put("/api/v1/services/docking", json={"max_running": -1}).json()["field"] == "max_running"
    assert client.put("/api/v1/services/docking", json={"paused": None}).status_code == 422
    assert client.post("/api/v1/services/bad%20name/pause").json()["field"] == "service"
    actions = [a["action"] for a in client.get("/api/v1/audit").json()["items"]]
    assert actions.count("service.change") == 3


def test_aidd_services_command(api_server: BackgroundServer, client: httpx.Client,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """`aidd services` lists; `aidd services NAME --pause/--resume/--limit` changes one; bad values exit 2."""
    client.post("/api/v1/tasks", json=task_body(service="docking"))

    def aidd(*argv: str) -> tuple[int, str, str]:
        code = cli_main([*argv, "--url", api_server.url])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = aidd("services", "docking", "--pause", "--limit", "4")
    assert code == 0 and out.strip() == "docking: paused, limit 4"
    code, out, _ = aidd("services")
    assert code == 0 and "docking" in out.splitlines()[-1] and "True" in out.splitlines()[-1]
    code, out, _ = aidd("services", "docking", "--resume", "--limit", "none")
    assert code == 0 and out.strip() == "docking: active, no limit"
    with pytest.raises(SystemExit) as usage:
        aidd("services", "docking", "--limit", "-3")
    assert usage.value.code == 2 and "not a count" in capsys.readouterr().err
    code, _, err = aidd("services", "--pause")
    assert code == 2 and "name the service" in err


def reason_of(client: httpx.Client, task_id: str, code: str) -> dict[str, str]:
    """The task's pending reason once the snapshot it is decided from (at most a second old) says `code`."""
    def changed() -> dict[str, str] | None:
        reason = client.get(f"/api/v1/tasks/{task_id}").json()["pending_reason"]
        return reason if reason and reason["code"] == code else None
    return wait_until(changed, 5, f"the reason {code}")


def test_pending_reasons_name_a_paused_or_full_service(client: httpx.Client) -> None:
    """A paused service's tasks say so before anything about workers; a service at its limit says its count."""
    task = client.post("/api/v1/tasks", json=task_body(service="docking")).json()
    client.post("/api/v1/services/docking/pause")
    assert reason_of(client, task["id"], "paused") == {"code": "paused", "message": "service `docking` is paused"}
    client.put("/api/v1/services/docking", json={"paused": False, "max_running": 1})
    agent = HttpAgent.register(client)
    assert len(agent.lease(max_tasks=1)) == 1
    second = client.post("/api/v1/tasks", json=task_body(service="docking")).json()
    limited = reason_of(client, second["id"], "service_limit")
    assert limited["message"] == "service `docking` runs 1 task, its limit"
    listed = client.get("/api/v1/tasks", params={"pending_reason": "service_limit"}).json()
    assert [t["id"] for t in listed["items"]] == [second["id"]]
