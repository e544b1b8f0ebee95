"""Dashboards, health, audit and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api.answers import TEXT, Dashboard, Health, Items
from coordinator.api.auth import Access
from coordinator.api.http import JSONResponse
from coordinator.api.params import IntQuery
from coordinator.api.routing import Api, Ctx

api = Api("stats")

DAYS = IntQuery("days", default=7, low=1, high=366)
BATCH_LIMIT = IntQuery("limit", default=50, low=1, high=1000)
AUDIT_LIMIT = IntQuery("limit", default=100, low=1, high=10_000)


@api.route("GET", "/api/v1/health", Access.PUBLIC, "Whether Redis and PostgreSQL answer (503 when not)", returns=Health)
async def health(request: Request, ctx: Ctx) -> Any:
    report = await ctx.coordinator.health()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


@api.route("GET", "/api/v1/stats/dashboard", Access.READ, "Tasks by status, queues, cluster totals, counters",
           returns=Dashboard)
async def dashboard(request: Request, ctx: Ctx) -> Any:
    c = ctx.coordinator
    return {"tasks": await c.stats.task_counts(), "queues": await c.stats.queues(),
            "workers": await c.workers.stats(), "counters": await c.stats.counters()}


@api.route("GET", "/api/v1/stats/queues", Access.READ, "Per service: pending, running, last hour, oldest wait",
           returns=Items)
async def queues(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.queues()}


@api.route("GET", "/api/v1/stats/tasks/date", Access.READ, "Submitted / succeeded / failed per day (?days=7)",
           query=(DAYS,), returns=Items)
async def by_date(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.by_date(DAYS.value(request))}


@api.route("GET", "/api/v1/batches", Access.READ, "Recent batches with progress", query=(BATCH_LIMIT,), returns=Items)
async def batches(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.batches(BATCH_LIMIT.value(request))}


@api.route("GET", "/api/v1/audit", Access.READ, "Operator actions, newest first (?limit=100)", query=(AUDIT_LIMIT,),
           returns=Items)
async def audit(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.audit(AUDIT_LIMIT.value(request))}


@api.route("GET", "/metrics", Access.READ, "Prometheus text: queues, tasks by state, workers, GPUs", returns=TEXT)
async def metrics(request: Request, ctx: Ctx) -> Any:
    c = ctx.coordinator
    registry = CollectorRegistry()
    pending = Gauge("aidd_pending_tasks", "Pending tasks", ["service"], registry=registry)
    running = Gauge("aidd_running_tasks", "Running tasks", ["service"], registry=registry)
    oldest = Gauge("aidd_oldest_pending_seconds", "Age of the oldest pending task", ["service"], registry=registry)
    for q in await c.stats.queues():
        pending.labels(q["service"]).set(q["pending"])
        running.labels(q["service"]).set(q["running"])
        oldest.labels(q["service"]).set(q["oldest_pending_s"] or 0)
    by_state = Gauge("aidd_tasks", "Tasks by state", ["status"], registry=registry)
    for status, n in (await c.stats.task_counts())["by_status"].items():
        by_state.labels(status).set(n)
    workers = Gauge("aidd_workers", "Workers by status", ["status"], registry=registry)
    gpu_util = Gauge("aidd_gpu_utilization_percent", "GPU utilisation", ["worker", "hostname", "gpu"],
                     registry=registry)
    gpu_mem = Gauge("aidd_gpu_memory_used_gb", "GPU memory used", ["worker", "hostname", "gpu"], registry=registry)
    counts: dict[str, int] = {}
    for w in await c.workers.overview():
        counts[w["status"]] = counts.get(w["status"], 0) + 1
        for g in w["metrics"].get("gpus", []):
            labels = (str(w["id"]), w["hostname"], str(g.get("index")))
            gpu_util.labels(*labels).set(g.get("utilization", 0))
            gpu_mem.labels(*labels).set(g.get("memory_used_gb", 0))
    for status, n in counts.items():
        workers.labels(status).set(n)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
