"""Service registry endpoints: list services with their pause and running limit; operators change them."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from coordinator.api.answers import ServiceList, ServiceView
from coordinator.api.auth import Access
from coordinator.api.http import HttpError, body
from coordinator.api.routing import Api, Ctx
from coordinator.schemas import NAME_PATTERN, ServiceChange

api = Api("services")


def service_name(request: Request) -> str:
    """The `{service}` of the path, or a 422 (names become parts of Redis keys)."""
    name = request.path_params["service"]
    if not re.match(NAME_PATTERN, name):
        raise HttpError(422, f"service: not a service name: {name!r}", field="service")
    return str(name)


@api.route("GET", "/api/v1/services", Access.READ, "Services: paused or not, running limit, running and pending",
           returns=ServiceList)
async def list_services(request: Request, ctx: Ctx) -> Any:
    return {"items": [s.view() for s in await ctx.coordinator.services.states()]}


@api.route("GET", "/api/v1/services/{service}", Access.READ, "One service (any name: an unknown one is "
                                                             "simply not paused and unlimited)", returns=ServiceView)
async def get_service(request: Request, ctx: Ctx) -> Any:
    return (await ctx.coordinator.services.state(service_name(request))).view()


@api.route("PUT", "/api/v1/services/{service}", Access.OPERATOR, "Pause or resume a service, set its running "
           "limit (null: the configured one) or description; fields left out stay", body=ServiceChange,
           returns=ServiceView)
async def change_service(request: Request, ctx: Ctx) -> Any:
    change = await body(request, ServiceChange, ctx.settings.max_body_bytes)
    return (await ctx.coordinator.services.change(service_name(request), change, ctx.caller.name)).view()


@api.route("POST", "/api/v1/services/{service}/pause", Access.OPERATOR, "Pause: its pending tasks wait, running "
                                                                        "ones go on", returns=ServiceView)
async def pause_service(request: Request, ctx: Ctx) -> Any:
    change = ServiceChange(paused=True)
    return (await ctx.coordinator.services.change(service_name(request), change, ctx.caller.name)).view()


@api.route("POST", "/api/v1/services/{service}/resume", Access.OPERATOR, "Resume a paused service",
           returns=ServiceView)
async def resume_service(request: Request, ctx: Ctx) -> Any:
    change = ServiceChange(paused=False)
    return (await ctx.coordinator.services.change(service_name(request), change, ctx.caller.name)).view()
