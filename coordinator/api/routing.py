"""One table of endpoints: each names its access level and body schema, so auth and OpenAPI derive from it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator import ids
from coordinator.api.auth import Access, Authenticator, Caller
from coordinator.api.http import HttpError, JSONResponse, error_response
from coordinator.api.params import Query
from coordinator.config import Settings
from coordinator.errors import AiddError, Unavailable
from coordinator.outages import OUTAGES
from coordinator.service import Coordinator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ctx:
    """What a handler gets besides the request."""

    coordinator: Coordinator
    settings: Settings
    caller: Caller


Handler = Callable[[Request, Ctx], Awaitable[Any]]
Returns = type[BaseModel] | tuple[type[BaseModel], ...] | dict[str, Any] | None


@dataclass(frozen=True)
class Endpoint:
    """One route: method, path, who may call it, its body schema, query parameters and a summary for the OpenAPI
    document."""

    method: str
    path: str
    access: Access
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    status: int = 200
    query: tuple[Query, ...] = ()
    also: tuple[type[BaseModel], ...] = ()
    """Other JSON bodies the route accepts in place of `body` (the batch forms of a submission)."""
    content: dict[str, dict[str, Any]] | None = None
    """Request bodies that are not JSON: media type -> schema (multipart form, raw bytes)."""
    body_required: bool = True
    answers: dict[int, dict[str, Any]] | None = None
    """Schemas of answers that differ from the usual ones (a report's per-event outcomes, 200 or 409)."""
    returns: Returns = None
    """The success answer: a JSON model (api/answers.py), several (one of them), or media type -> schema."""
    tag: str = ""
    """The group the route is listed under in the OpenAPI document (its module's Api tag)."""
    routine: bool = False
    """Its answered requests are access records at debug level (a heartbeat: every agent sends one every few
    seconds, and a line each would drown the rest; see `access.AccessLog`)."""


class ApiRoute(Route):
    """A Starlette route that carries its endpoint's `routine` for the access log (which sees `scope["route"]`)."""

    def __init__(self, endpoint: Endpoint, handle: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(endpoint.path, handle, methods=[endpoint.method])
        self.routine = endpoint.routine


class Api:
    """Collects endpoints (`@api.route(...)`) and turns them into Starlette routes."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, access: Access, summary: str, body: type[BaseModel] | None = None,
              status: int = 200, query: tuple[Query, ...] = (), also: tuple[type[BaseModel], ...] = (),
              content: dict[str, dict[str, Any]] | None = None,
              body_required: bool = True, answers: dict[int, dict[str, Any]] | None = None,
              returns: Returns = None, routine: bool = False) -> Callable[[Handler], Handler]:
        """Register a handler under this route (see Endpoint for what each argument describes)."""
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, access, handler, summary, body, status, query, also,
                                           content, body_required, answers, returns, self.tag, routine))
            return handler
        return register

    def routes(self, coordinator: Coordinator, settings: Settings) -> list[Route]:
        """Starlette routes; paths with fewer parameters come first, so `/tasks/bulk/retry` is not taken for
        `/tasks/{task_id}/retry` (a literal segment wins over a parameter). Among equals the agents' routes go
        first: they are most of the traffic, and Starlette tries the routes in order."""
        auth = Authenticator(settings, coordinator.workers)
        ordered = sorted(self.endpoints, key=lambda e: (e.path.count("{"), e.access != Access.WORKER))
        return [ApiRoute(e, _wrap(e, coordinator, settings, auth)) for e in ordered]


def _wrap(endpoint: Endpoint, coordinator: Coordinator, settings: Settings,
          auth: Authenticator) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            prefixes: dict[str, str] = {}
            for name, value in request.path_params.items():
                if name.endswith("_id") and name != "command_id":
                    try:
                        request.path_params[name] = uuid.UUID(value)
                    except ValueError:
                        if ids.is_node_name(name, value):  # a named node: its id follows from its name
                            request.path_params[name] = ids.node_id(value)
                            continue
                        if endpoint.access == Access.WORKER or not ids.is_prefix(name, value):  # agents: full ids
                            raise HttpError(422, f"{name}: not a UUID: {value!r}", field=name) from None
                        prefixes[name] = value
            caller = await auth.check(request, endpoint.access)
            for name, prefix in prefixes.items():  # only once the caller may ask: a prefix says an id exists
                request.path_params[name] = await ids.resolve(coordinator.core.engine, name, prefix)
            result = await endpoint.handler(request, Ctx(coordinator, settings, caller))
        except AiddError as exc:
            return error_response(exc)
        except DataError as exc:  # a value PostgreSQL refuses (out of range, bad text): the caller's input
            detail = str(getattr(exc, "orig", exc)).splitlines()[0]
            return error_response(HttpError(422, f"a value was refused by the database: {detail}"))
        except OUTAGES as exc:
            log.warning("%s %s: store unavailable: %s: %s", request.method, request.url.path,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return error_response(Unavailable(f"Redis or PostgreSQL unavailable ({type(exc).__name__}); retry"))
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=endpoint.status)
    handle.__name__ = endpoint.handler.__name__
    return handle
