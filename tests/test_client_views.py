"""The client's typed views: they name only fields the API's answer schemas promise, with the same defaults, and a
real coordinator's answers build them (one worker fetched alone, one task acted on by its own route)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from aiddclient import views
from aiddclient.client import ApiError, CoordinatorClient
from coordinator.api import answers
from coordinator.server import BackgroundServer
from tests.consolekit import scripted_agent
from tests.support.tasks import task_body

pytestmark = pytest.mark.anyio

VIEWS = [c for _, c in inspect.getmembers(views, inspect.isclass)
         if issubclass(c, views.View) and c is not views.View]


def _comparable(value: Any) -> Any:
    """A default as JSON would carry it: tuples and read-only mappings as lists and dicts."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.__name__)
def test_each_view_reads_only_fields_its_answer_schema_promises(view: type[views.View]) -> None:
    """A view field the schema lacks would read its default forever; a default unlike the schema's would show
    an answer without the field differently from one that has it."""
    schema: type[BaseModel] = getattr(answers, view.__name__)
    promised = schema.model_fields
    for field in dataclasses.fields(view):  # type: ignore[arg-type]
        assert field.name in promised, f"{view.__name__}.{field.name} is not in answers.{schema.__name__}"
        declared = promised[field.name]
        default = views.field_default(field)
        if default is dataclasses.MISSING:
            assert declared.is_required(), f"{view.__name__}.{field.name}: required here, optional in the schema"
        elif not declared.is_required() and declared.default is not None:
            assert _comparable(default) == declared.default, f"{view.__name__}.{field.name}: default"


def test_a_missing_or_null_field_reads_as_its_default_and_a_required_one_is_an_error() -> None:
    task = views.TaskView.from_json({"id": "t1", "status": "pending", "priority": None, "labels": ["gpu"],
                                     "pending_reason": {"code": "no_worker", "message": "no worker"}})
    assert (task.priority, task.group, task.labels, task.resources.cpu) == (2, "default", ("gpu",), 0.0)
    assert task.pending_reason == views.PendingReason("no_worker", "no worker")
    with pytest.raises(KeyError, match="status"):
        views.TaskView.from_json({"id": "t1"})


def test_an_offline_workers_gpus_keep_the_readings_of_its_last_heartbeat() -> None:
    """The API leaves readings out of an offline worker's GPUs; the view merges in its last ones (by index)."""
    worker = views.WorkerView.from_json({
        "id": "w1", "status": "offline", "gpus": [{"index": 0, "name": "A100", "memory_gb": 80}],
        "metrics": {"gpus": [{"index": 0, "utilization": 42, "memory_used_gb": 10}]}})
    [gpu] = worker.gpus
    assert (gpu.name, gpu.utilization, gpu.memory_used_gb, gpu.memory) == ("A100", 42, 10, 80)
    assert worker.offline and worker.cpu_fraction == 0.0


async def test_the_client_builds_views_from_a_real_coordinator(api_server: BackgroundServer,
                                                               client: httpx.Client) -> None:
    """Real answers fit their schemas (typed fields included) and build views; one worker is fetched alone."""
    agent = scripted_agent(client, "gpu-node-1", groups=["gpu"], gpus=[{"index": 0, "name": "A100", "memory_gb": 80}])
    client.post(f"/api/v1/workers/{agent.id}/heartbeat", headers=agent.headers, json={
        "current_tasks": [], "gpus": [{"index": 0, "utilization": 3, "memory_used_gb": 1, "memory_total_gb": 80}]})
    batch = client.post("/api/v1/tasks", json={"tasks": [task_body(name="dock one", group="gpu",
                                                                   resources={"gpu": 1})], "name": "b1"}).json()
    waiting = client.post("/api/v1/tasks", json=task_body(name="waits", priority=3)).json()
    [leased] = agent.lease()
    for path, schema in [(f"/api/v1/tasks/{leased['task_id']}", answers.TaskView), ("/api/v1/tasks", answers.TaskPage),
                         (f"/api/v1/workers/{agent.id}", answers.WorkerView), ("/api/v1/workers", answers.WorkerList),
                         ("/api/v1/batches", answers.BatchList), ("/api/v1/stats/dashboard", answers.Dashboard),
                         ("/api/v1/stats/queues", answers.QueueList), ("/api/v1/workers/stats", answers.ClusterTotals),
                         ("/api/v1/services", answers.ServiceList)]:
        schema.model_validate(client.get(path).raise_for_status().json())
    async with CoordinatorClient(api_server.url) as api:
        worker = await api.worker(agent.id[:8])  # a unique prefix names it too
        assert (worker.id, worker.hostname, worker.status, worker.groups) == (agent.id, "gpu-node-1", "online",
                                                                              ("gpu",))
        [gpu] = worker.gpus
        assert (gpu.name, gpu.allocated, gpu.utilization, [t.task_id for t in gpu.tasks]) == (
            "A100", True, 3, [leased["task_id"]])
        assert [w.id for w in await api.workers()] == [agent.id]
        running = await api.task(leased["task_id"])
        assert (running.status, running.gpus, running.worker_hostname, running.batch_id) == (
            "running", (0,), "gpu-node-1", batch["batch_id"])
        assert [a.number for a in running.attempt_history] == [1] and running.gpu_use[0].index == 0
        page = await api.tasks(page_size=10, status=["pending"])
        assert page.total == 1 and page.items[0].id == waiting["id"] and page.items[0].priority == 3
        assert page.items[0].pending_reason is not None and page.items[0].pending_reason.code
        [listed] = await api.batches()
        assert (listed.id, listed.name, listed.total, listed.running) == (batch["batch_id"], "b1", 1, 1)
        dashboard = await api.dashboard()
        assert dashboard.tasks.total == 2 and dashboard.workers.gpu_counts["allocated_gpus"] == 1
        assert {q.service for q in dashboard.queues} == {"admet"}
        cancelled = await api.act_on("cancel", waiting["id"])
        assert cancelled.status == "cancelled"
        with pytest.raises(ApiError) as refused:
            await api.act_on("requeue", waiting["id"])
        assert refused.value.status == 409
        with pytest.raises(ApiError) as stale:  # the attempt the operator saw is no longer current
            await api.act_on("cancel", leased["task_id"], attempt_id="00000000-0000-0000-0000-000000000000")
        assert stale.value.status == 409
        with pytest.raises(ApiError) as missing:
            await api.worker("00000000-0000-0000-0000-000000000000")
        assert missing.value.status == 404
