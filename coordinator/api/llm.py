"""The LLM scheduler's routes, served as they were: its model registry is our service registry (a model is a
service; its id is the service's stable number, `max_workers` its running limit, `online` not paused), and
its task body `{"model_id", "type", "input", "priority"}` is a task of that service."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from coordinator.api.answers import Health, ModelView
from coordinator.api.auth import Access
from coordinator.api.http import HttpError, body, parse
from coordinator.api.routing import Api, Ctx
from coordinator.api.stats import health
from coordinator.keys import PRIORITY_MAX, PRIORITY_MIN
from coordinator.schemas import Name, ServiceChange, TaskSpec, Text
from coordinator.services import ServiceState

api = Api("llm-scheduler")


class ModelSpec(BaseModel):
    """A model as the LLM scheduler registers it; other fields it sends are ignored."""

    model_config = ConfigDict(extra="ignore")
    name: Name
    max_workers: int | None = Field(default=None, ge=0, le=1_000_000)
    status: Literal["online", "offline"] = "offline"
    """A new model waits for `PUT .../status {"status": "online"}`, as it did there."""
    description: Text = ""


class ModelStatus(BaseModel):
    """`{"status": "online"}` or `"offline"`."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["online", "offline"]


class ModelTask(BaseModel):
    """The LLM scheduler's task body; fields besides these go into `input_params` too."""

    model_config = ConfigDict(extra="allow")
    model_id: int = Field(ge=1, le=2**31 - 1)
    type: Name
    input: Any = None
    priority: int = Field(default=2, ge=PRIORITY_MIN, le=PRIORITY_MAX)


def model_view(state: ServiceState) -> dict[str, Any]:
    """A service as the LLM scheduler showed a model."""
    return {"id": state.number, "name": state.name, "status": "offline" if state.paused else "online",
            "max_workers": state.limit, "description": state.description, "running": state.running,
            "pending": state.pending}


async def model_task_spec(ctx: Ctx, data: dict[str, Any]) -> TaskSpec:
    """The task an LLM-scheduler body stands for: a task of the model's service (404 for an unknown model)."""
    task = parse(ModelTask, data)
    service = await ctx.coordinator.services.name_of(task.model_id)
    extra = task.model_extra or {}
    return TaskSpec(service=service, task_type=task.type, name=task.type, priority=task.priority,
                    input_params={"input": task.input, **extra})


def model_number(request: Request) -> int:
    """The `{model}` of the path: a model id (an integer), or a 422."""
    raw = request.path_params["model"]
    if not raw.isdigit() or not 1 <= int(raw) < 2**31:
        raise HttpError(422, f"model: not a model id: {raw!r}", field="model")
    return int(raw)


@api.route("POST", "/api/v1/models", Access.OPERATOR, "Register a model: a service with `max_workers` as its "
           "running limit, offline (paused) until set online", body=ModelSpec, status=201, returns=ModelView)
async def create_model(request: Request, ctx: Ctx) -> Any:
    spec = await body(request, ModelSpec, ctx.settings.max_body_bytes)
    change = ServiceChange(paused=spec.status == "offline", max_running=spec.max_workers,
                           description=spec.description)
    return model_view(await ctx.coordinator.services.change(spec.name, change, ctx.caller.name))


@api.route("GET", "/api/v1/models", Access.READ, "Registered models (services with a registry entry), as a list",
           returns={"application/json": {"schema": {"type": "array",
                                                    "items": {"$ref": "#/components/schemas/ModelView"}}}})
async def list_models(request: Request, ctx: Ctx) -> Any:
    return [model_view(s) for s in await ctx.coordinator.services.states() if s.number is not None]


@api.route("GET", "/api/v1/models/{model}", Access.READ, "One model", returns=ModelView)
async def get_model(request: Request, ctx: Ctx) -> Any:
    services = ctx.coordinator.services
    return model_view(await services.state(await services.name_of(model_number(request))))


@api.route("PUT", "/api/v1/models/{model}/status", Access.OPERATOR, "Set a model online (its tasks run) or "
           "offline (they wait)", body=ModelStatus, returns=ModelView)
async def set_model_status(request: Request, ctx: Ctx) -> Any:
    status = await body(request, ModelStatus, ctx.settings.max_body_bytes)
    services = ctx.coordinator.services
    name = await services.name_of(model_number(request))
    return model_view(await services.change(name, ServiceChange(paused=status.status == "offline"),
                                            ctx.caller.name))


@api.route("GET", "/api/v1/system/health", Access.PUBLIC, "The health check at the LLM scheduler's path",
           returns=Health)
async def system_health(request: Request, ctx: Ctx) -> Any:
    return await health(request, ctx)

