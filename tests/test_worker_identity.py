"""A host is one host: real agent processes that restart under the same name take their identity back, and
offline workers can be removed (API, CLI) or expire.

Same short timers as the other end-to-end agent tests (heartbeat timeout 3 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from nodeagent.identity import FILE
from tests.agent_helpers import ROOT, AgentProcess, Api
from tests.helpers import Agent, submit_one
from tests.support.waiting import wait_until
from tests.test_agent_e2e import agents, api, live, start_agent

__all__ = ["agents", "api", "live"]  # fixtures, used by name


def rows(api: Api, hostname: str) -> list[dict[str, object]]:
    """Every worker row of a hostname."""
    return [w for w in api.http.get("/api/v1/workers").json()["items"] if w["hostname"] == hostname]


@pytest.mark.slow
def test_a_restarted_agent_is_the_same_worker(live: BackgroundServer, tmp_path: Path,
                                              agents: list[AgentProcess], api: Api) -> None:
    first, worker_id = start_agent(live, tmp_path, agents, api, "restart-node")
    assert first.stop(signal.SIGTERM) == 0
    assert rows(api, "restart-node")[0]["status"] == "offline"
    start_agent(live, tmp_path, agents, api, "restart-node")
    wait_until(lambda: rows(api, "restart-node")[0]["status"] == "online", 15, "the agent to be back")
    assert [w["id"] for w in rows(api, "restart-node")] == [worker_id]

    second = agents[-1]  # a reboot empties the temp dir: the identity file is gone, the offline row is taken back
    second.kill()
    (second.work_dir / FILE).unlink()
    wait_until(lambda: rows(api, "restart-node")[0]["status"] == "offline", 15, "the worker to be declared lost")
    start_agent(live, tmp_path, agents, api, "restart-node")
    wait_until(lambda: rows(api, "restart-node")[0]["status"] == "online", 15, "the agent to be back")
    assert [w["id"] for w in rows(api, "restart-node")] == [worker_id]


@pytest.mark.slow
def test_an_agent_killed_and_restarted_at_once_takes_back_its_identity_and_its_task_runs_again(
        live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess], api: Api) -> None:
    """Restarted before the heartbeat timeout: the old identity still looks alive. The restarted agent proves it
    is that worker (its kept token); the attempt the old process ran counts as lost, and the task runs again."""
    first, worker_id = start_agent(live, tmp_path, agents, api, "crash-node")
    task_id = api.submit(input_params={"command": "sleep 1.5"}, max_retries=0)
    api.wait_status(task_id, "running")
    first.kill()
    start_agent(live, tmp_path, agents, api, "crash-node")
    done = api.wait_status(task_id, "succeeded", timeout=30)
    assert done["worker_id"] == worker_id and done["attempts"] == 2 and done["worker_losses"] == 1
    assert done["attempt_history"][0]["end_reason"] == "worker_lost"
    assert [w["id"] for w in rows(api, "crash-node")] == [worker_id]


@pytest.mark.slow
def test_two_live_agents_with_one_name_keep_apart(live: BackgroundServer, tmp_path: Path,
                                                  agents: list[AgentProcess], api: Api) -> None:
    """A second agent started under a name a live one has (a cloned VM, a stray local agent) gets a row of its
    own: neither takes the other's identity, so they do not knock each other's tasks off in turns."""
    start_agent(live, tmp_path, agents, api, "twin")
    (tmp_path / "other").mkdir()
    agents.append(AgentProcess(live.url, tmp_path / "other", "twin"))
    twins = wait_until(lambda: len(rows(api, "twin")) == 2 and rows(api, "twin"), 20, "the second agent")
    time.sleep(2.0)  # several heartbeats each
    again = rows(api, "twin")
    assert {w["id"] for w in again} == {w["id"] for w in twins} and {w["status"] for w in again} == {"online"}
    assert all("registering again" not in agent.output for agent in agents)


def test_only_offline_workers_are_removed(client: httpx.Client, api_server: BackgroundServer) -> None:
    from tests.support.agent import HttpAgent

    online = HttpAgent.register(client, hostname="busy-host")
    gone = HttpAgent.register(client, hostname="retired-host")
    assert client.delete(f"/api/v1/workers/{gone.id}").status_code == 200
    refused = client.post(f"/api/v1/workers/{online.id}/remove")
    assert refused.status_code == 409 and "only an offline worker" in refused.json()["error"]
    removed = client.post(f"/api/v1/workers/{gone.id[:8]}/remove")  # a unique prefix is enough
    assert removed.status_code == 200 and removed.json() == {"id": gone.id, "removed": True}
    assert [w["hostname"] for w in client.get("/api/v1/workers").json()["items"]] == ["busy-host"]
    assert client.post(f"/api/v1/workers/{gone.id}/remove").status_code == 404
    assert gone.post("heartbeat", {}).status_code == 401  # its token went with it
    audit = client.get("/api/v1/audit").json()["items"]
    assert audit[0]["action"] == "worker.remove" and audit[0]["target"] == gone.id


def test_aidd_workers_rm(client: httpx.Client, api_server: BackgroundServer) -> None:
    from tests.support.agent import HttpAgent

    gone = HttpAgent.register(client, hostname="old-host")
    online = HttpAgent.register(client, hostname="live-host")
    client.delete(f"/api/v1/workers/{gone.id}")

    def aidd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aiddclient.cli", *args, "--url", api_server.url],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    done = aidd("workers", "rm", gone.id[:8])
    assert done.returncode == 0 and done.stdout.strip() == f"removed worker {gone.id}"
    refused = aidd("workers", "rm", online.id)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "is online" in refused.stderr
    assert aidd("workers", "rm").returncode == 2


@pytest.mark.anyio
async def test_the_leader_expires_long_offline_workers(coordinator: Coordinator) -> None:
    old = await Agent.register(coordinator, hostname="long-gone")
    recent = await Agent.register(coordinator, hostname="just-gone")
    live_one = await Agent.register(coordinator, hostname="alive")
    task_id = await submit_one(coordinator)
    [leased] = await old.lease()
    assert leased["task_id"] == task_id and await old.report(leased, "succeeded")
    for agent in (old, recent):
        await coordinator.workers.deregister(agent.id)
    async with coordinator.core.engine.begin() as conn:
        await conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '4 days' "
                                "WHERE id IN (:old, :alive)"), {"old": old.id, "alive": live_one.id})
    await coordinator.timers.tick()
    names = {w["hostname"] for w in await coordinator.workers.overview()}
    assert names == {"just-gone", "alive"}  # an online worker never expires, whatever its record says
    assert (await coordinator.tasks.get(uuid.UUID(task_id)))["worker_id"] == old.id  # history keeps the id
    assert not await coordinator.core.redis.exists(coordinator.core.keys.worker(str(old.id)))
