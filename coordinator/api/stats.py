"""Dashboards, health, batches and their results, audit and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from coordinator import results
from coordinator.api.answers import RESULTS, TEXT, BatchList, BatchView, Dashboard, Health, Items, QueueList
from coordinator.api.auth import Access
from coordinator.api.http import JSONResponse
from coordinator.api.params import IntQuery, Query
from coordinator.api.routing import Api, Ctx

api = Api("stats")

DAYS = IntQuery("days", default=7, low=1, high=366)
BATCH_LIMIT = IntQuery("limit", default=50, low=1, high=1000)
AUDIT_LIMIT = IntQuery("limit", default=100, low=1, high=10_000)
RESULTS_FORMAT = Query("format", "jsonl (default) or csv", enum=sorted(results.FORMATS))


@api.route("GET", "/api/v1/health", Access.PUBLIC, "Whether Redis and PostgreSQL answer (503 when not)", returns=Health)
async def health(request: Request, ctx: Ctx) -> Any:
    report = await ctx.coordinator.health()
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


@api.route("GET", "/api/v1/stats/dashboard", Access.READ,
           "Tasks by status, queues, cluster totals, counters, the retention window", returns=Dashboard)
async def dashboard(request: Request, ctx: Ctx) -> Any:
    c = ctx.coordinator
    retention = {"task_days": ctx.settings.task_retention_days, "file_days": ctx.settings.file_retention_days}
    return {"tasks": await c.stats.task_counts(), "queues": await c.stats.queues(),
            "workers": await c.workers.stats(), "counters": await c.stats.counters(), "retention": retention}


@api.route("GET", "/api/v1/stats/queues", Access.READ, "Per service: pending, running, last hour, oldest wait",
           returns=QueueList)
async def queues(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.queues()}


@api.route("GET", "/api/v1/stats/tasks/date", Access.READ, "Submitted / succeeded / failed per day (?days=7)",
           query=(DAYS,), returns=Items)
async def by_date(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.by_date(DAYS.value(request))}


@api.route("GET", "/api/v1/batches", Access.READ, "Recent batches with progress", query=(BATCH_LIMIT,),
           returns=BatchList)
async def batches(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.batches(BATCH_LIMIT.value(request))}


@api.route("GET", "/api/v1/batches/{batch_id}", Access.READ, "One batch with progress (the id or a unique prefix)",
           returns=BatchView)
async def batch(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.stats.batch(request.path_params["batch_id"])


@api.route("GET", "/api/v1/batches/{batch_id}/results", Access.READ, "The batch's results as one table, streamed: a "
           "row per molecule of every task (failures with their error); format jsonl (default) or csv",
           query=(RESULTS_FORMAT,), returns=RESULTS)
async def batch_results(request: Request, ctx: Ctx) -> Any:
    batch_id, fmt = request.path_params["batch_id"], RESULTS_FORMAT.read(request) or "jsonl"
    engine = ctx.coordinator.core.engine
    names = await results.columns(engine, batch_id)
    return StreamingResponse(results.encoded(engine, batch_id, names, fmt), media_type=results.FORMATS[fmt],
                             headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.{fmt}"'})


@api.route("GET", "/api/v1/audit", Access.READ, "Operator actions, newest first (?limit=100)", query=(AUDIT_LIMIT,),
           returns=Items)
async def audit(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.stats.audit(AUDIT_LIMIT.value(request))}


@api.route("GET", "/metrics", Access.READ, "Prometheus text: this coordinator's counters and latencies; the "
           "cluster's gauges on the leader (see README, Metrics)", returns=TEXT)
async def metrics(request: Request, ctx: Ctx) -> Any:
    return Response(ctx.coordinator.core.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
