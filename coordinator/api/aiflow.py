"""The AIFlow inference gateway's routes, served as they were: `tasks_json` and `tasks_form` submit a task
of service `aiflow` whose task type is the gateway's `task_type` (the name a `register_inference_function`
plugin registered on the agent), and answer `{task_id, status: "PENDING", created_at, message}`. Polling
`GET /api/v1/tasks/{task_id}` with a key of profile `aiflow` (API_GATEWAY_API_KEYS) reads its status words."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from coordinator.api.answers import Health, Submitted
from coordinator.api.auth import Access
from coordinator.api.files import is_multipart, submit_with_files
from coordinator.api.http import HttpError, body, load_json, parse, read_body
from coordinator.api.routing import Api, Ctx
from coordinator.api.stats import health
from coordinator.api.tasks import check_shell
from coordinator.compat import Profile, present
from coordinator.schemas import Name, TaskSpec

api = Api("aiflow")

SERVICE = "aiflow"
"""The service of every gateway task: agents with AIFlow plugins serve it (or any service)."""
FORM_FIELDS = ("task_type", "model_spec", "payload", "inference_params")
FIELDS = {**{name: {"type": "string", "description": "JSON"} for name in FORM_FIELDS[1:]},
          "task_type": {"type": "string"}}
FORM = {"multipart/form-data": {"type": "object", "required": ["task_type"], "properties": {
            **FIELDS, "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
        "application/x-www-form-urlencoded": {"type": "object", "required": ["task_type"], "properties": FIELDS}}


class GatewayTask(BaseModel):
    """The gateway's task body."""

    model_config = ConfigDict(extra="ignore")
    task_type: Name
    model_spec: dict[str, Any] = {}
    payload: Any = None
    inference_params: dict[str, Any] = {}

    def spec(self) -> TaskSpec:
        """Our task for it: the three parts as its input_params, the plugin's arguments."""
        return TaskSpec(service=SERVICE, task_type=self.task_type, name=self.task_type,
                        input_params={"model_spec": self.model_spec, "payload": self.payload,
                                      "inference_params": self.inference_params})


def _form_task(fields: dict[str, bytes]) -> TaskSpec:
    """The gateway task of a `tasks_form` body: `task_type` as text, the others as JSON text."""
    data: dict[str, Any] = {}
    for name in FORM_FIELDS:
        if name not in fields:
            continue
        raw = fields[name].decode("utf-8", errors="replace")
        data[name] = raw if name == "task_type" else load_json(raw, name) if raw.strip() else None
    return parse(GatewayTask, {k: v for k, v in data.items() if v is not None}).spec()


async def _accepted(ctx: Ctx, task_id: Any) -> dict[str, Any]:
    task = present(Profile.AIFLOW, await ctx.coordinator.tasks.get(task_id))
    return {"task_id": task["id"], "status": task["status"], "created_at": task["created_at"],
            "message": "task accepted"}


@api.route("POST", "/api/v1/tasks_json", Access.SUBMIT, "AIFlow: submit {task_type, model_spec, payload, "
           "inference_params}", body=GatewayTask, returns=Submitted)
async def tasks_json(request: Request, ctx: Ctx) -> Any:
    spec = (await body(request, GatewayTask, ctx.settings.max_body_bytes)).spec()
    check_shell(ctx, [spec])
    stored = await ctx.coordinator.tasks.submit([spec], ctx.caller.name)
    return await _accepted(ctx, stored.ids[0])


@api.route("POST", "/api/v1/tasks_form", Access.SUBMIT, "AIFlow: submit as multipart/form-data (JSON text "
           "fields and files, stored as the task's inputs)", content=FORM, returns=Submitted)
async def tasks_form(request: Request, ctx: Ctx) -> Any:
    if is_multipart(request):
        return await _accepted(ctx, await submit_with_files(request, ctx, check_shell, FORM_FIELDS, _form_task))
    if request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raw = await read_body(request, ctx.settings.max_body_bytes)  # no files: clients send a plain form
        spec = _form_task({k: v.encode() for k, v in parse_qsl(raw.decode("utf-8", errors="replace"))})
        check_shell(ctx, [spec])
        stored = await ctx.coordinator.tasks.submit([spec], ctx.caller.name)
        return await _accepted(ctx, stored.ids[0])
    raise HttpError(415, "send a form: task_type, model_spec, payload, inference_params (and files: multipart)")


@api.route("GET", "/health", Access.PUBLIC, "The health check at the gateway's path", returns=Health)
async def gateway_health(request: Request, ctx: Ctx) -> Any:
    return await health(request, ctx)
