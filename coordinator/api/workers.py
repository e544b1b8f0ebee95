"""Worker endpoints: agents register, heartbeat, lease and report; operators list and command workers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from coordinator.api.answers import (
    Acked,
    ClusterTotals,
    Deregistered,
    HeartbeatAnswer,
    Items,
    Leased,
    Registered,
    Removed,
    Sent,
    WorkerList,
    WorkerView,
)
from coordinator.api.auth import Access
from coordinator.api.http import JSONResponse, body, load_json, parse, read_body
from coordinator.api.params import FlagQuery, ListQuery, Query
from coordinator.api.routing import Api, Ctx
from coordinator.errors import WorkerNotFound
from coordinator.ids import node_id
from coordinator.schemas import (
    CommandAck,
    Heartbeat,
    LeaseRequest,
    NodeHeartbeat,
    ReportBatch,
    WorkerCommandSpec,
    WorkerRegistration,
)
from coordinator.states import WorkerStatus

api = Api("workers")

GROUP = Query("group", "only the workers serving this group")
STATUS = Query("status", enum=[s.value for s in WorkerStatus])
ALL = FlagQuery("all", "every command, acknowledged ones too")
ACK_IDS = ListQuery("ids", "command ids, comma-separated (instead of a body)",
                    item={"type": "integer", "minimum": 1, "maximum": 2**63 - 1})
REPORT_RESULTS = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["task_id", "attempt_id", "event", "status"],
    "properties": {"task_id": {"type": "string", "format": "uuid"}, "attempt_id": {"type": "string", "format": "uuid"},
                   "event": {"type": "string"}, "status": {"type": "integer", "enum": [200, 409]},
                   "error": {"type": "string"}}}}}}
"""A report's answer: each event's outcome (200 accepted, 409 its attempt is no longer current)."""
REPORT_ANSWER = {"application/json": {"schema": REPORT_RESULTS}}


@api.route("POST", "/api/v1/workers/register", Access.AGENT, "Enroll a host; returns its id and own token",
           body=WorkerRegistration, status=201, returns=Registered)
async def register(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.workers.register(
        await body(request, WorkerRegistration, ctx.settings.max_body_bytes))


@api.route("POST", "/api/v1/workers/{worker_id}/heartbeat", Access.WORKER,
           "Telemetry; the answer carries pending commands and tasks the worker no longer owns", body=Heartbeat,
           returns=HeartbeatAnswer, routine=True)
async def heartbeat(request: Request, ctx: Ctx) -> Any:
    beat = await body(request, Heartbeat, ctx.settings.max_body_bytes)
    return await ctx.coordinator.workers.heartbeat(request.path_params["worker_id"], beat)


@api.route("POST", "/api/v1/workers/heartbeat", Access.AGENT, "A named node's heartbeat (the Workers API's): "
           "its name in the body; a name not seen before is enrolled with defaults", body=NodeHeartbeat,
           returns=HeartbeatAnswer, routine=True)
async def node_heartbeat(request: Request, ctx: Ctx) -> Any:
    beat = await body(request, NodeHeartbeat, ctx.settings.max_body_bytes)
    workers, worker_id = ctx.coordinator.workers, node_id(beat.worker_id)
    try:
        answer = await workers.heartbeat(worker_id, beat)
    except WorkerNotFound:
        await workers.register(WorkerRegistration(hostname=beat.worker_id), worker_id)
        answer = await workers.heartbeat(worker_id, beat)
    return {**answer, "worker_id": beat.worker_id, "id": worker_id}


@api.route("POST", "/api/v1/workers/{worker_id}/lease", Access.WORKER,
           "Long-poll for up to max_tasks fitting tasks, each with its attempt id and GPUs", body=LeaseRequest,
           returns=Leased)
async def lease(request: Request, ctx: Ctx) -> Any:
    ask = await body(request, LeaseRequest, ctx.settings.max_body_bytes)
    return {"tasks": await ctx.coordinator.workers.lease(request.path_params["worker_id"], ask,
                                                         gone=request.is_disconnected)}


@api.route("POST", "/api/v1/workers/{worker_id}/reports", Access.WORKER,
           "Events about the worker's attempts (started, progress, log, succeeded, failed, handback); "
           "each is refused (409) unless its attempt is current", body=ReportBatch,
           answers={200: REPORT_RESULTS, 409: REPORT_RESULTS}, returns=REPORT_ANSWER)
async def reports(request: Request, ctx: Ctx) -> Any:
    batch = await body(request, ReportBatch, ctx.settings.max_batch_bytes)
    accepted = await ctx.coordinator.workers.report(request.path_params["worker_id"], batch.events)
    results = [{"task_id": e.task_id, "attempt_id": e.attempt_id, "event": e.event,
                "status": 200 if ok else 409} | ({} if ok else {"error": "attempt is no longer current"})
               for e, ok in zip(batch.events, accepted, strict=True)]
    return JSONResponse({"results": results}, status_code=200 if any(accepted) else 409)


@api.route("DELETE", "/api/v1/workers/{worker_id}", Access.WORKER_OR_OPERATOR,
           "Graceful stop: the worker goes offline; tasks it still holds go back to the queue", returns=Deregistered)
async def deregister(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.workers.deregister(request.path_params["worker_id"])


@api.route("POST", "/api/v1/workers/{worker_id}/remove", Access.OPERATOR,
           "Delete an offline worker from the record (409 unless offline); its tasks keep its id",
           returns=Removed)
async def remove_worker(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.workers.remove(request.path_params["worker_id"], ctx.caller.name)


@api.route("GET", "/api/v1/workers", Access.READ, "List workers (filters: group, status)", query=(GROUP, STATUS),
           returns=WorkerList)
async def list_workers(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.workers.overview(group=GROUP.read(request), status=STATUS.read(request))}


@api.route("GET", "/api/v1/workers/stats", Access.READ, "Cluster totals: cores, memory, GPUs, used and free",
           returns=ClusterTotals)
async def worker_stats(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.workers.stats()


@api.route("GET", "/api/v1/workers/{worker_id}", Access.READ, "One worker", returns=WorkerView)
async def get_worker(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.workers.get(request.path_params["worker_id"])


@api.route("POST", "/api/v1/workers/{worker_id}/commands", Access.OPERATOR,
           "Send drain / resume / cancel-task / shutdown to one worker", body=WorkerCommandSpec, status=201,
           returns=Sent)
async def send_command(request: Request, ctx: Ctx) -> Any:
    spec = await body(request, WorkerCommandSpec, ctx.settings.max_body_bytes)
    return {"sent": await ctx.coordinator.workers.send([request.path_params["worker_id"]], spec, ctx.caller.name)}


@api.route("GET", "/api/v1/workers/{worker_id}/commands", Access.WORKER_OR_READ,
           "A worker's commands not yet acknowledged (?all=1: every one)", query=(ALL,), returns=Items)
async def list_commands(request: Request, ctx: Ctx) -> Any:
    return {"items": await ctx.coordinator.workers.commands(request.path_params["worker_id"], not ALL.on(request))}


@api.route("DELETE", "/api/v1/workers/{worker_id}/commands", Access.WORKER_OR_OPERATOR,
           "Acknowledge commands carried out (body {\"ids\": [...]} or ?ids=1,2); with neither, drop every "
           "command not yet acknowledged (an operator clearing the node's queue)", body=CommandAck,
           query=(ACK_IDS,), body_required=False, returns=Acked)
async def ack_commands(request: Request, ctx: Ctx) -> Any:
    ids, worker_id = ACK_IDS.values(request), request.path_params["worker_id"]
    raw = await read_body(request, ctx.settings.max_body_bytes) if not ids else b""
    if not ids and not raw.strip():
        return {"acked": await ctx.coordinator.workers.clear_commands(worker_id, ctx.caller.name)}
    ack = parse(CommandAck, {"ids": ids} if ids else load_json(raw))  # each an integer: 422 naming ids[i]
    return {"acked": await ctx.coordinator.workers.ack(worker_id, ack.ids)}


@api.route("POST", "/api/v1/workers/broadcast", Access.OPERATOR,
           "Send a command to every worker that is not offline (optionally one group)", body=WorkerCommandSpec,
           returns=Sent)
async def broadcast(request: Request, ctx: Ctx) -> Any:
    spec = await body(request, WorkerCommandSpec, ctx.settings.max_body_bytes)
    return {"sent": await ctx.coordinator.workers.broadcast(spec, ctx.caller.name)}
