"""Every pending task says why it waits: per queue shape (workers, labels, sizes, busy) and per task (backoff, an old
attempt stopping, higher priority ahead); served on the task, in lists, per queue, and as a filter."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from aiddclient.cli import main as cli_main
from coordinator import pending
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from tests.consolekit import console, refreshed, until
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body
from tests.support.waiting import await_until, wait_until

pytestmark = pytest.mark.anyio
GPU = {"index": 0, "name": "A100", "uuid": "GPU-0", "memory_gb": 40}


def submit(client: httpx.Client, **fields: Any) -> str:
    reply = client.post("/api/v1/tasks", json=task_body(**fields))
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def reason_of(client: httpx.Client, task_id: str, code: str, message: str | None = None) -> dict[str, str]:
    """The task's pending reason once it has `code` (and `message`): reasons follow the workers within a second."""
    def probe() -> dict[str, str] | None:
        reason = client.get(f"/api/v1/tasks/{task_id}").json()["pending_reason"]
        return reason if reason and reason["code"] == code and message in (None, reason["message"]) else None
    return wait_until(probe, timeout=10, what=f"reason {code} of {task_id}")


def test_no_worker_in_group_then_none_serving_the_service(client: httpx.Client) -> None:
    task = submit(client, group="nobody")
    assert reason_of(client, task, "no_group")["message"] == "no online worker in group `nobody`"
    HttpAgent.register(client, groups=["nobody"], services=["docking"], cpu_cores=4)
    assert reason_of(client, task, "no_service")["message"] == "no online worker in group `nobody` serves `admet`"


def test_offline_workers_are_counted_not_used(client: httpx.Client) -> None:
    agent = HttpAgent.register(client, groups=["gone"], cpu_cores=4)
    assert client.delete(f"/api/v1/workers/{agent.id}", headers=agent.headers).status_code == 200
    task = submit(client, group="gone")
    assert reason_of(client, task, "no_group")["message"] == "no online worker in group `gone` (1 offline)"


def test_missing_labels_are_named(client: httpx.Client) -> None:
    HttpAgent.register(client, groups=["lab"], labels=["gpu"], cpu_cores=4)
    task = submit(client, group="lab", labels=["a100", "gpu"])
    assert reason_of(client, task, "no_labels")["message"] == \
        "no worker in group `lab` serving `admet` has the label `a100`"


def test_too_big_says_which_resource(client: httpx.Client) -> None:
    HttpAgent.register(client, groups=["big"], cpu_cores=8, memory_gb=32, gpus=[GPU])
    gpus = submit(client, group="big", resources={"gpu": 2})
    cores = submit(client, group="big", resources={"cpu": 16, "memory_gb": 64})
    gpu_memory = submit(client, group="big", resources={"gpu": 1, "gpu_memory_gb": 80})
    assert reason_of(client, gpus, "too_big")["message"] == "no worker is big enough: none has 2 GPUs"
    assert reason_of(client, cores, "too_big")["message"] == \
        "no worker is big enough: none has 16 cores, 64 GB memory"
    assert reason_of(client, gpu_memory, "too_big")["message"] == \
        "no worker is big enough: none has 80 GB GPU memory"


def test_a_worker_registering_again_is_seen_as_it_now_is(client: httpx.Client) -> None:
    """The snapshot keeps each worker's registration between looks: one that registers again with a GPU (its
    identity taken back, the same row) must count with the GPU at the next look."""
    agent = HttpAgent.register(client, hostname="grows", groups=["grow"], cpu_cores=4)
    task = submit(client, group="grow", resources={"gpu": 1})
    assert reason_of(client, task, "too_big")["message"] == "no worker is big enough: none has 1 GPU"
    again = HttpAgent.register(client, hostname="grows", groups=["grow"], cpu_cores=4, gpus=[GPU],
                               worker_id=agent.id, worker_token=agent.token)
    assert again.id == agent.id
    reason_of(client, task, "ready")


def test_a_gpu_held_by_a_running_task_is_not_room(client: httpx.Client) -> None:
    """A worker with cores and slots to spare but its one GPU held by a running task: a GPU task waits `busy`, not
    `ready` (what the running tasks hold is counted as the leases count it)."""
    agent = HttpAgent.register(client, hostname="one-gpu", groups=["held"], cpu_cores=8, slots=4, gpus=[GPU])
    submit(client, group="held", resources={"gpu": 1})
    assert len(agent.lease()) == 1
    waiting = submit(client, group="held", resources={"gpu": 1})
    assert reason_of(client, waiting, "busy")["message"] == "the 1 fitting worker is busy"


def test_too_big_together(client: httpx.Client) -> None:
    HttpAgent.register(client, hostname="cpu-box", groups=["mix"], cpu_cores=32)
    HttpAgent.register(client, hostname="gpu-box", groups=["mix"], cpu_cores=4, gpus=[GPU])
    task = submit(client, group="mix", resources={"cpu": 16, "gpu": 1})
    assert reason_of(client, task, "too_big")["message"] == \
        "no worker is big enough: none has 16 cores, 1 GPU together"


def test_ready_then_busy_then_draining_then_priority(client: httpx.Client) -> None:
    agent = HttpAgent.register(client, groups=["busy"], cpu_cores=4, slots=1)
    first = submit(client, group="busy")
    assert reason_of(client, first, "ready")["message"].startswith("starts at the next lease")
    [leased] = agent.lease()
    assert leased["task_id"] == first
    low = submit(client, group="busy", priority=1)
    assert reason_of(client, low, "busy")["message"] == "the 1 fitting worker is busy"
    high = submit(client, group="busy", priority=3)
    assert reason_of(client, low, "priority")["message"] == \
        "1 task of higher priority is ahead; the 1 fitting worker is busy"
    assert reason_of(client, high, "busy")
    listed = client.get("/api/v1/tasks", params={"group": "busy", "status": "pending"}).json()["items"]
    assert {t["id"]: t["pending_reason"]["code"] for t in listed} == {low: "priority", high: "busy"}
    assert client.post(f"/api/v1/workers/{agent.id}/commands", json={"command": "drain"}).status_code in (200, 201)
    assert reason_of(client, high, "busy", "the 1 fitting worker is draining")


def test_a_worker_that_cannot_run_tasks_is_not_room(client: httpx.Client) -> None:
    agent = HttpAgent.register(client, groups=["broken"], cpu_cores=4)
    task = submit(client, group="broken")
    reason_of(client, task, "ready")
    assert agent.post("heartbeat", {"problem": "work dir /scratch is read-only"}).status_code == 200
    assert reason_of(client, task, "busy", "the 1 fitting worker cannot run tasks: work dir /scratch is read-only")


def test_retry_backoff_and_old_attempt_stopping(client: httpx.Client) -> None:
    agent = HttpAgent.register(client, groups=["retry"], cpu_cores=4)
    failing = submit(client, group="retry", max_retries=2)
    [leased] = agent.lease()
    assert agent.report(leased, "failed", reason="error", error="boom", exit_code=1).status_code == 200
    backoff = client.get(f"/api/v1/tasks/{failing}").json()["pending_reason"]
    assert backoff["code"] == "backoff" and backoff["message"].startswith("retry backoff until ")
    stopping = submit(client, group="retry", priority=9)
    [leased] = agent.lease()
    assert leased["task_id"] == stopping
    assert client.post(f"/api/v1/tasks/{stopping}/requeue").status_code == 200
    assert client.get(f"/api/v1/tasks/{stopping}").json()["pending_reason"] == {
        "code": "stopping", "message": "waiting for the old attempt to stop"}


def test_filter_by_reason_and_queue_summary(client: httpx.Client) -> None:
    HttpAgent.register(client, groups=["fit"], cpu_cores=2)
    orphans = {submit(client, service="docking", group="nobody") for _ in range(3)}
    big = submit(client, service="docking", group="fit", resources={"gpu": 1})
    reason_of(client, big, "too_big")
    listed = client.get("/api/v1/tasks", params={"pending_reason": "no_group"}).json()
    assert {t["id"] for t in listed["items"]} == orphans and listed["total"] == 3
    both = client.get("/api/v1/tasks", params={"pending_reason": "no_group,too_big"}).json()
    assert both["total"] == 4
    bad = client.get("/api/v1/tasks", params={"pending_reason": "sleepy"})
    assert bad.status_code == 422 and "pending_reason" in bad.text
    [docking] = [q for q in client.get("/api/v1/stats/queues").json()["items"] if q["service"] == "docking"]
    assert docking["waiting"] == [
        {"code": "no_group", "message": "no online worker in group `nobody`", "count": 3},
        {"code": "too_big", "message": "no worker is big enough: none has 1 GPU", "count": 1}]
    cancelled = client.post("/api/v1/tasks/bulk/cancel", json={"filter": {"pending_reason": ["no_group"]}})
    assert cancelled.json()["changed"] == 3


def test_aidd_tasks_shows_and_filters_reasons(api_server: BackgroundServer, client: httpx.Client,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    orphan = submit(client, group="nobody")
    HttpAgent.register(client, groups=["small"], cpu_cores=2)
    big = submit(client, group="small", resources={"cpu": 8})
    reason_of(client, big, "too_big")
    assert cli_main(["tasks", "--reason", "no_group", "--url", api_server.url]) == 0
    out = capsys.readouterr().out
    assert orphan in out and big not in out and "no_group" in out and "1 of 1 tasks" in out
    with pytest.raises(SystemExit) as bad:
        cli_main(["tasks", "--reason", "sleepy", "--url", api_server.url])
    assert bad.value.code == 2 and "--reason" in capsys.readouterr().err
    assert cli_main(["cancel", "--reason", "too_big", "--url", api_server.url]) == 0
    assert client.get(f"/api/v1/tasks/{big}").json()["status"] == "cancelled"
    assert client.get(f"/api/v1/tasks/{orphan}").json()["status"] == "pending"


async def test_the_queues_pane_says_why_tasks_wait(api_server: BackgroundServer, client: httpx.Client) -> None:
    from console.widgets.queue_table import QueueTable

    for _ in range(3):
        submit(client, service="docking", group="nobody")
    submit(client, service="docking", group="elsewhere")
    app = console(api_server)
    async with app.run_test(size=(200, 40)) as pilot:
        await refreshed(pilot)
        table = app.screen.query_one(QueueTable)
        await until(pilot, lambda: table.get_cell("docking", "waiting").plain
                    == "3 of 4: no online worker in group `nobody` (+1 more)", what="the reason in the Queues pane")


async def test_no_request_waits_for_a_snapshot_once_there_is_one(coordinator: Coordinator,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An old snapshot answers while the next is taken in the background; a take that fails drops it, so the next
    caller waits for a take and sees the failure (the tasks then show without reasons)."""
    reasons = coordinator.tasks.reasons
    first = await reasons.snapshot()
    take, release = reasons._take, asyncio.Event()

    async def slow_take() -> pending.Snapshot:
        await release.wait()
        return await take()
    monkeypatch.setattr(reasons, "_take", slow_take)
    monkeypatch.setattr(pending, "SNAPSHOT_TTL_S", 0.0)
    assert await asyncio.wait_for(reasons.snapshot(), 0.5) is first  # a take started, the old one answered
    release.set()

    async def renewed() -> bool:
        return await reasons.snapshot() is not first
    await await_until(renewed, 5, "the next snapshot")

    async def failing() -> pending.Snapshot:
        raise OSError("PostgreSQL away")
    monkeypatch.setattr(reasons, "_take", failing)
    await reasons.snapshot()  # answered by the last one; its successor fails
    await await_until(lambda: reasons._taking is None, 5, "the failed take")
    with pytest.raises(OSError):
        await reasons.snapshot()
