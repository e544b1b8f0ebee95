"""The Starlette application: routes, guard middleware, and the coordinator's start/stop in the lifespan."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.api import aiflow, files, llm, probes, services, stats, tasks, workers
from coordinator.api.access import AccessLog
from coordinator.api.conventions import EXCEPTION_HANDLERS, OPENAPI_PATH, SlashInsensitive, cors, docs_routes
from coordinator.api.guard import HostOriginGuard
from coordinator.api.http import JSONResponse
from coordinator.api.openapi import openapi_document
from coordinator.api.routing import Endpoint
from coordinator.api.timing import RequestTimer
from coordinator.config import Settings
from coordinator.service import Coordinator

APIS = (tasks.api, workers.api, services.api, stats.api, files.api, probes.api, llm.api, aiflow.api)
ENDPOINTS: list[Endpoint] = [e for api in APIS for e in api.endpoints]


def package_version() -> str:
    """The installed version of aidd (or `dev` from a source tree)."""
    try:
        return version("aidd")
    except PackageNotFoundError:
        return "dev"


def create_app(settings: Settings, coordinator: Coordinator | None = None, timers: bool = True,
               freeze_gc: bool = False) -> Starlette:
    """The API over `coordinator` (built from settings when not given); started and stopped by the lifespan.

    With `freeze_gc` (a process that only serves, `aidd --serve`), what exists once started (modules, schema,
    engine) is moved out of the garbage collector's way: full collections then scan only what requests
    create; before, each paused the event loop for ~100 ms.
    """
    service = coordinator or Coordinator.build(settings)
    service.core.metrics.set_version(package_version())
    owned = coordinator is None

    @functools.cache
    def document() -> dict[str, Any]:
        """Built at the first request, not at the start: its ~70 schemas cost a start about half a second."""
        return openapi_document(ENDPOINTS, package_version())

    async def openapi(request: Request) -> Response:
        return JSONResponse(document())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owned:
            await service.start(timers=timers)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if owned:
                await service.stop()

    api_routes = [route for api in APIS for route in api.routes(service, settings)]
    routes = [*api_routes, Route(OPENAPI_PATH, openapi, methods=["GET"]), *docs_routes()]
    middleware = [Middleware(RequestTimer, metrics=service.core.metrics),
                  Middleware(AccessLog, enabled=settings.access_log), Middleware(SlashInsensitive),
                  *cors(settings), Middleware(HostOriginGuard, settings=settings)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.router.redirect_slashes = False
    app.state.coordinator = service
    app.state.version = package_version()
    return app
