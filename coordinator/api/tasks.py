"""Task endpoints for clients: submit (one or a batch), list, get, logs, cancel / retry / requeue, bulk."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from coordinator.api.answers import BatchSubmitted, BulkOutcome, LogPage, TaskCounts, TaskPage, TaskView, Timeline
from coordinator.api.auth import Access
from coordinator.api.files import is_multipart, submit_with_files
from coordinator.api.http import HttpError, parse, read_json
from coordinator.api.llm import model_task_spec
from coordinator.api.params import IntQuery, ListQuery, Query, UuidQuery
from coordinator.api.routing import Api, Ctx
from coordinator.compat import present
from coordinator.errors import Forbidden
from coordinator.schemas import NAME_PATTERN, BatchSpec, BulkAction, TaskFilter, TaskList, TaskSpec
from coordinator.states import Action, ReasonCode, TaskStatus
from coordinator.tasks import SORTABLE

api = Api("tasks")

UPLOAD_FORM = {"multipart/form-data": {
    "type": "object", "required": ["task"],
    "properties": {"task": {"type": "string", "contentMediaType": "application/json",
                            "description": "one task as JSON (the TaskSpec schema)"},
                   "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}
"""A submission with files: the task as a JSON form field, and file parts named by their filenames."""
FILTER = (ListQuery("status", "statuses, comma-separated", enum=[s.value for s in TaskStatus]),
          ListQuery("service", "services, comma-separated", item={"type": "string", "pattern": NAME_PATTERN}),
          ListQuery("group", "groups, comma-separated", item={"type": "string", "pattern": NAME_PATTERN}),
          UuidQuery("batch_id"), UuidQuery("worker_id"),
          Query("q", "text matched against name, task type, id, status, service, group, parameters and worker "
                "hostname", max_length=200),
          ListQuery("pending_reason", "pending tasks waiting for these reasons, comma-separated",
                    enum=[c.value for c in ReasonCode]))
PAGE = IntQuery("page", default=1, low=1, high=1_000_000)
PAGE_SIZE = IntQuery("page_size", default=20, low=1, high=1000)
SORT = Query("sort", "column, `-` first for descending", enum=sorted(f"{d}{c}" for c in SORTABLE for d in ("", "-")))
AFTER = IntQuery("after", "log line id to continue after", default=0, low=0, high=2**62)
LOG_LIMIT = IntQuery("limit", default=1000, low=1, high=10_000)
ATTEMPT = UuidQuery("attempt_id", "only change the task while this is its attempt (409 otherwise)")
LOG_ATTEMPT = UuidQuery("attempt_id", "only the lines of this attempt")


@api.route("POST", "/api/v1/tasks", Access.SUBMIT, "Submit one task, or a batch ({\"tasks\": [...]} or a list); "
           "a multipart/form-data body is taken as at /api/v1/tasks/upload", body=TaskSpec, status=201,
           also=(BatchSpec, TaskList), returns=(TaskView, BatchSubmitted))
async def submit(request: Request, ctx: Ctx) -> Any:
    if is_multipart(request):
        return await ctx.coordinator.tasks.get(await submit_with_files(request, ctx, check_shell))
    data = await read_json(request, ctx.settings.max_batch_bytes)
    if isinstance(data, list):
        data = {"tasks": data}
    if isinstance(data, dict) and "tasks" in data:
        batch = parse(BatchSpec, data)
        if len(batch.tasks) > ctx.settings.max_batch_tasks:
            raise HttpError(413, f"batch of {len(batch.tasks)} tasks is over the limit of "
                                 f"{ctx.settings.max_batch_tasks}; send it in several requests with batch_id")
        specs = [parse(TaskSpec, {**batch.defaults, **t}, prefix=f"tasks[{i}]") for i, t in enumerate(batch.tasks)]
        check_shell(ctx, specs)
        for i, spec in enumerate(specs):
            await ctx.coordinator.files.check_spec(spec, f"tasks[{i}].")
        stored = await ctx.coordinator.tasks.submit(specs, ctx.caller.name, batch_name=batch.name,
                                                    batch_id=batch.batch_id)
        return {"batch_id": stored.batch_id, "count": len(stored.ids), "ids": stored.ids}
    if request.state.body_size > ctx.settings.max_body_bytes:
        raise HttpError(413, f"request body is over the limit of {ctx.settings.max_body_bytes} bytes")
    spec = await model_task_spec(ctx, data) if isinstance(data, dict) and "model_id" in data else parse(TaskSpec, data)
    check_shell(ctx, [spec])
    await ctx.coordinator.files.check_spec(spec)
    stored = await ctx.coordinator.tasks.submit([spec], ctx.caller.name)
    return present(ctx.caller.profile,
                   stored.views[0] if stored.views else await ctx.coordinator.tasks.get(stored.ids[0]))


@api.route("POST", "/api/v1/tasks/upload", Access.SUBMIT, "Submit one task with files: a `task` form field "
           "holding the task as JSON, and file parts stored as its inputs", status=201, content=UPLOAD_FORM,
           returns=TaskView)
async def submit_files(request: Request, ctx: Ctx) -> Any:
    if not is_multipart(request):
        raise HttpError(415, "send multipart/form-data: a `task` field (JSON) and file parts")
    return await ctx.coordinator.tasks.get(await submit_with_files(request, ctx, check_shell))


def check_shell(ctx: Ctx, specs: list[TaskSpec]) -> None:
    if ctx.settings.shell_requires_operator and ctx.caller.role != "operator" and any(
            s.task_type == "shell" for s in specs):
        raise Forbidden("shell tasks need an operator key on this coordinator")


def task_filter(request: Request) -> TaskFilter:
    """The filter given as query parameters (status, service, group: comma-separated; batch_id; q)."""
    status, service, group, batch_id, worker_id, search, reason = FILTER
    return parse(TaskFilter, {"status": status.values(request), "service": service.values(request),
                              "group": group.values(request), "batch_id": batch_id.read(request),
                              "worker_id": worker_id.read(request), "search": search.read(request) or "",
                              "pending_reason": reason.values(request)})


@api.route("GET", "/api/v1/tasks", Access.READ, "List tasks: filters status, service, group, batch_id, q, "
                                                "pending_reason; "
                                                "page, page_size, sort", query=(*FILTER, PAGE, PAGE_SIZE, SORT),
           returns=TaskPage)
async def list_tasks(request: Request, ctx: Ctx) -> Any:
    page = await ctx.coordinator.tasks.page(task_filter(request), page=PAGE.value(request),
                                            page_size=PAGE_SIZE.value(request),
                                            sort=SORT.read(request) or "-created_at")
    return {**page, "items": [present(ctx.caller.profile, t) for t in page["items"]]}


@api.route("GET", "/api/v1/tasks/stats", Access.READ, "Tasks by status, overall and per service", returns=TaskCounts)
async def task_stats(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.stats.task_counts()


@api.route("GET", "/api/v1/tasks/{task_id}", Access.READ, "One task with its attempts (running: its GPUs, gpu_use)",
           returns=TaskView)
async def get_task(request: Request, ctx: Ctx) -> Any:
    task = await ctx.coordinator.tasks.get(request.path_params["task_id"])
    task["gpu_use"] = await ctx.coordinator.workers.task_gpus(task)
    return present(ctx.caller.profile, task)


@api.route("GET", "/api/v1/tasks/{task_id}/timeline", Access.READ, "What happened to the task, oldest first: "
           "submitted, leases, starts, ends, retries, operator actions, why it waits",
           returns=Timeline)
async def task_timeline(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.tasks.timeline(request.path_params["task_id"])


@api.route("GET", "/api/v1/tasks/{task_id}/logs", Access.READ, "Log lines after line id `after`",
           query=(AFTER, LOG_LIMIT, LOG_ATTEMPT), returns=LogPage)
async def task_logs(request: Request, ctx: Ctx) -> Any:
    return await ctx.coordinator.tasks.logs(request.path_params["task_id"], after=AFTER.value(request),
                                            limit=LOG_LIMIT.value(request), attempt_id=LOG_ATTEMPT.value(request))


async def _single(request: Request, ctx: Ctx, action: Action) -> Any:
    task_id = request.path_params["task_id"]
    await ctx.coordinator.lifecycle.act(action, [task_id], ctx.caller.name, single=True,
                                        attempt_id=ATTEMPT.value(request))
    return present(ctx.caller.profile, await ctx.coordinator.tasks.get(task_id))


@api.route("DELETE", "/api/v1/tasks/{task_id}", Access.OPERATOR, "Cancel a task (a running one is killed)",
           query=(ATTEMPT,), returns=TaskView)
async def cancel(request: Request, ctx: Ctx) -> Any:
    return await _single(request, ctx, Action.CANCEL)


@api.route("POST", "/api/v1/tasks/{task_id}/retry", Access.OPERATOR, "Run a finished task again", query=(ATTEMPT,),
           returns=TaskView)
async def retry(request: Request, ctx: Ctx) -> Any:
    return await _single(request, ctx, Action.RETRY)


@api.route("POST", "/api/v1/tasks/{task_id}/requeue", Access.OPERATOR, "Put a running or pending task back "
                                                                        "in its queue now", query=(ATTEMPT,),
           returns=TaskView)
async def requeue(request: Request, ctx: Ctx) -> Any:
    return await _single(request, ctx, Action.REQUEUE)


async def _bulk(request: Request, ctx: Ctx, action: Action) -> Any:
    selector = parse(BulkAction, await read_json(request, ctx.settings.max_batch_bytes))
    ids = await ctx.coordinator.tasks.resolve(selector)
    return (await ctx.coordinator.lifecycle.act(action, ids, ctx.caller.name)).view()


@api.route("POST", "/api/v1/tasks/bulk/cancel", Access.OPERATOR, "Cancel tasks by ids or filter", body=BulkAction,
           returns=BulkOutcome)
async def bulk_cancel(request: Request, ctx: Ctx) -> Any:
    return await _bulk(request, ctx, Action.CANCEL)


@api.route("POST", "/api/v1/tasks/bulk/retry", Access.OPERATOR, "Retry tasks by ids or filter", body=BulkAction,
           returns=BulkOutcome)
async def bulk_retry(request: Request, ctx: Ctx) -> Any:
    return await _bulk(request, ctx, Action.RETRY)


@api.route("POST", "/api/v1/tasks/bulk/requeue", Access.OPERATOR, "Requeue tasks by ids or filter", body=BulkAction,
           returns=BulkOutcome)
async def bulk_requeue(request: Request, ctx: Ctx) -> Any:
    return await _bulk(request, ctx, Action.REQUEUE)
