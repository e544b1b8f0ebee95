"""`GET /metrics`: the exposition parses, and holds the families, types, labels and values the README promises.

Real API over HTTP, real stores; the leader's snapshot is taken by driving the timers (`timers.tick()`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from coordinator.states import Action, TaskStatus
from tests.helpers import drive_to, started
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body
from tests.support.waiting import await_until

GIB = 1024**3
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")
DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "aidd.json"

COUNTERS = {
    "aidd_tasks_submitted": {"service"},
    "aidd_tasks_leased": {"service"},
    "aidd_tasks_finished": {"service", "status"},
    "aidd_tasks_retried": {"service", "reason"},
    "aidd_reports_refused": {"event"},
    "aidd_workers_lost": set(),
    "aidd_internal_errors": {"where"},
    "aidd_http_requests": {"method", "route", "status"},
}
HISTOGRAMS = {
    "aidd_http_request_duration_seconds": {"method", "route"},
    "aidd_task_queue_wait_seconds": {"service"},
    "aidd_attempt_duration_seconds": {"service", "reason"},
}
CLUSTER_GAUGES = {
    "aidd_tasks_pending": {"service"},
    "aidd_tasks_running": {"service"},
    "aidd_oldest_pending_task_age_seconds": {"service"},
    "aidd_workers": {"status"},
    "aidd_slots": set(),
    "aidd_slots_used": set(),
    "aidd_gpus": set(),
    "aidd_gpus_allocated": set(),
    "aidd_gpus_busy": set(),
    "aidd_gpus_idle": set(),
    "aidd_gpu_utilization_ratio": {"hostname", "gpu"},
    "aidd_gpu_memory_used_bytes": {"hostname", "gpu"},
    "aidd_gpu_memory_total_bytes": {"hostname", "gpu"},
    "aidd_cluster_snapshot_age_seconds": set(),
}


def scrape(client: httpx.Client) -> dict[str, Any]:
    """The exposition as parsed by prometheus_client: family name -> family."""
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(reply.text)}


def samples(families: dict[str, Any], name: str, suffix: str = "") -> list[Sample]:
    return [s for s in families[name].samples if s.name == name + suffix]


def value(families: dict[str, Any], name: str, suffix: str = "", **labels: str) -> float:
    """The one sample of `name` with exactly these labels (AssertionError when there is none)."""
    found = [s.value for s in samples(families, name, suffix) if s.labels == labels]
    assert len(found) == 1, f"{name}{suffix}{labels}: {found} in {samples(families, name, suffix)}"
    return float(found[0])


@pytest.fixture
def cluster(api_server: BackgroundServer, client: httpx.Client) -> Iterator[HttpAgent]:
    """A GPU worker on `gpu-host-1` (two GPUs, 4 slots) running one admet task, with one finished and one pending."""
    agent = HttpAgent.register(client, hostname="gpu-host-1", services=["admet"], slots=4,
                               gpus=[{"index": 0, "name": "H200", "memory_gb": 141},
                                     {"index": 1, "name": "H200", "memory_gb": 141}])
    beat = agent.post("heartbeat", {"used_cpu": 1, "gpus": [
        {"index": 0, "utilization": 50, "memory_used_gb": 10, "memory_total_gb": 141},
        {"index": 1, "utilization": 0, "memory_used_gb": 0, "memory_total_gb": 141}]})
    assert beat.status_code == 200
    for body in (task_body(), task_body(resources={"gpu": 1})):
        assert client.post("/api/v1/tasks", json=body).status_code == 201
    leased = agent.lease(max_tasks=2, wait_s=0)
    assert len(leased) == 2
    cpu_task = next(t for t in leased if not t["gpus"])
    assert agent.report(cpu_task, "succeeded", result={"ok": True}).status_code == 200
    assert agent.report(cpu_task, "succeeded", result={"again": True}).json()["results"][0]["status"] == 409
    assert client.post("/api/v1/tasks", json=task_body(service="docking", task_type="vina")).status_code == 201
    api_server.call(api_server.coordinator.timers.tick)
    yield agent


def test_families_types_and_labels(cluster: HttpAgent, client: httpx.Client) -> None:
    """Every promised family is there with its type and label names; counters end in _total, base units only."""
    families = scrape(client)
    for name, labels in COUNTERS.items():
        assert families[name].type == "counter", name
        assert all(s.name in (f"{name}_total", f"{name}_created") for s in families[name].samples)
        assert all(set(s.labels) == labels for s in families[name].samples), name
    for name, labels in HISTOGRAMS.items():
        assert families[name].type == "histogram", name
        assert samples(families, name, "_bucket"), name
        assert all(set(s.labels) - {"le"} == labels for s in families[name].samples), name
    for name, labels in CLUSTER_GAUGES.items():
        assert families[name].type == "gauge", name
        assert samples(families, name), f"{name}: the leader exports it"
        assert all(set(s.labels) == labels for s in families[name].samples), name
    assert families["aidd_build_info"].type == "gauge"
    assert {"version", "python"} == set(samples(families, "aidd_build_info")[0].labels)
    assert value(families, "aidd_leader") == 1
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "python_info", "python_gc_objects_collected"):
        assert name in families, name
    assert not [n for n in families if n.startswith("aidd_") and re.search(r"_(gb|percent|ms)$", n)]


def test_values(cluster: HttpAgent, client: httpx.Client) -> None:
    """The counters count what happened; the cluster gauges say what is; GPUs are named by hostname and index."""
    families = scrape(client)
    assert value(families, "aidd_tasks_submitted", "_total", service="admet") == 2
    assert value(families, "aidd_tasks_submitted", "_total", service="docking") == 1
    assert value(families, "aidd_tasks_leased", "_total", service="admet") == 2
    assert value(families, "aidd_tasks_finished", "_total", service="admet", status="succeeded") == 1
    assert value(families, "aidd_reports_refused", "_total", event="succeeded") == 1
    assert value(families, "aidd_task_queue_wait_seconds", "_count", service="admet") == 2
    assert value(families, "aidd_attempt_duration_seconds", "_count", service="admet", reason="succeeded") == 1
    assert value(families, "aidd_tasks_pending", service="docking") == 1
    assert value(families, "aidd_tasks_pending", service="admet") == 0
    assert value(families, "aidd_tasks_running", service="admet") == 1
    assert value(families, "aidd_oldest_pending_task_age_seconds", service="docking") >= 0
    assert value(families, "aidd_workers", status="online") == 1
    assert value(families, "aidd_slots") == 4 and value(families, "aidd_slots_used") == 1
    assert value(families, "aidd_gpus") == 2
    assert value(families, "aidd_gpus_allocated") == 1 and value(families, "aidd_gpus_busy") == 1
    assert value(families, "aidd_gpus_idle") == 0  # allocated, busy: not idle (tests/test_gpu_accounting.py)
    assert value(families, "aidd_gpu_utilization_ratio", hostname="gpu-host-1", gpu="0") == 0.5
    assert value(families, "aidd_gpu_memory_used_bytes", hostname="gpu-host-1", gpu="0") == 10 * GIB
    assert value(families, "aidd_gpu_memory_total_bytes", hostname="gpu-host-1", gpu="1") == 141 * GIB


def test_http_routes_are_templates(cluster: HttpAgent, client: httpx.Client) -> None:
    """Request durations are labelled by route template and method, never by a path with ids in it."""
    assert client.get("/api/v1/no/such/route").status_code == 404
    families = scrape(client)
    routes = {(s.labels["method"], s.labels["route"], s.labels["status"])
              for s in samples(families, "aidd_http_requests", "_total")}
    timed = {(s.labels["method"], s.labels["route"])
             for s in samples(families, "aidd_http_request_duration_seconds", "_count")}
    assert timed == {(method, route) for method, route, _status in routes}
    assert ("POST", "/api/v1/workers/{worker_id}/lease", "200") in routes
    assert ("POST", "/api/v1/workers/{worker_id}/reports", "200") in routes
    assert ("POST", "/api/v1/tasks", "201") in routes
    assert ("GET", "unmatched", "404") in routes
    assert not [r for r in routes if UUID_RE.search(r[1])]


@pytest.mark.anyio
async def test_only_the_leader_exports_the_cluster(coordinator: Coordinator) -> None:
    """A second coordinator on the same stores exports its own counters, but no cluster gauge: summing the
    instances counts every task once. When it takes over, it exports them instead."""
    second = Coordinator.build(coordinator.core.settings)
    await second.start(timers=False)
    try:
        await coordinator.timers.tick()
        await second.timers.tick()
        leader = {f.name: f for f in text_string_to_metric_families(coordinator.core.metrics.exposition().decode())}
        other = {f.name: f for f in text_string_to_metric_families(second.core.metrics.exposition().decode())}
        assert value(leader, "aidd_leader") == 1 and value(other, "aidd_leader") == 0
        assert samples(leader, "aidd_slots") and not samples(other, "aidd_slots")
        assert not any(samples(other, name) for name in CLUSTER_GAUGES)
        await coordinator.timers.stop()  # hands the lease over
        await second.timers.tick()
        other = {f.name: f for f in text_string_to_metric_families(second.core.metrics.exposition().decode())}
        stopped = {f.name: f for f in text_string_to_metric_families(coordinator.core.metrics.exposition().decode())}
        assert value(other, "aidd_leader") == 1 and samples(other, "aidd_slots")
        assert value(stopped, "aidd_leader") == 0 and not samples(stopped, "aidd_slots")
    finally:
        await second.stop()


def test_the_grafana_dashboard_uses_only_metrics_we_export(cluster: HttpAgent, client: httpx.Client) -> None:
    """Every series the shipped dashboard queries is one this coordinator exports, with a suffix its type has."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    families = scrape(client)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for expr in exprs:
        for name in re.findall(r"\b((?:aidd|process)_[a-z_]+)", expr):
            family = next((f for f in families.values()
                           if any(name == f.name + s for s in suffixes.get(f.type, ("",)))), None)
            assert family is not None, f"{name} in {expr!r} is not exported"


@pytest.mark.anyio
async def test_every_ending_is_counted(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """Failures, retries (by reason and by an operator), cancels, timeouts and lost workers each land in their
    counter, and every ended attempt in the run-time histogram under its end reason."""
    async with started(settings, heartbeat_timeout=1.0) as coordinator:
        permanent = await drive_to(coordinator, TaskStatus.FAILED)  # failed at once
        failed = await drive_to(coordinator, TaskStatus.TIMEOUT)
        retried = await drive_to(coordinator, TaskStatus.RUNNING)
        assert await retried.agent.report(retried.leased, "failed", reason="error", error="exit 1")
        running = await drive_to(coordinator, TaskStatus.RUNNING)
        await coordinator.lifecycle.act(Action.CANCEL, [uuid.UUID(running.task_id)], "test", single=True)
        await coordinator.lifecycle.act(Action.RETRY, [uuid.UUID(failed.task_id)], "test", single=True)
        lost = await drive_to(coordinator, TaskStatus.RUNNING)

        async def lost_reaped() -> bool:
            for driven in (permanent, failed, retried, running):  # only `lost` falls silent
                await driven.agent.heartbeat()
            await coordinator.timers.reap_dead_workers()
            return await lost.agent.status() == "offline"
        await await_until(lost_reaped, what="the silent worker declared dead")
        families = {f.name: f for f in text_string_to_metric_families(coordinator.core.metrics.exposition().decode())}
    finished = {(s.labels["status"]): s.value for s in samples(families, "aidd_tasks_finished", "_total")}
    assert finished == {"failed": 1, "timeout": 1, "cancelled": 1}
    retries = {s.labels["reason"]: s.value for s in samples(families, "aidd_tasks_retried", "_total")}
    assert retries["error"] == 1 and retries["operator"] == 1 and retries["worker_lost"] == 1
    assert value(families, "aidd_workers_lost", "_total") >= 1
    ended = {s.labels["reason"] for s in samples(families, "aidd_attempt_duration_seconds", "_count")}
    assert {"permanent", "timeout", "error", "cancelled", "worker_lost"} <= ended
