"""What generic HTTP clients expect of the API beyond its routes: JSON errors for every status (404 and 405
included), paths with or without a trailing slash, CORS for named origins, and the docs pages served offline."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from coordinator.api.http import HttpError, error_response
from coordinator.config import Settings

OPENAPI_PATH = "/api/v1/openapi.json"
STATIC = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript"}
"""The vendored bundles (swagger-ui-dist 5, redoc 2; licences beside them): the hosts may have no internet."""

SWAGGER_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>AIDD coordinator API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div><script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "{OPENAPI_PATH}", dom_id: "#ui", deepLinking: true, validatorUrl: null}});</script>
</body></html>
"""
REDOC_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>AIDD coordinator API</title></head>
<body><redoc spec-url="{OPENAPI_PATH}"></redoc><script src="/docs/static/redoc.standalone.js"></script></body></html>
"""


class SlashInsensitive:
    """ASGI middleware: `/api/v1/workers/` is `/api/v1/workers`, answered in place (curl and httpx do not follow
    the 307 Starlette would send, and a redirected POST loses its body in some clients)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route 404, wrong method 405) in the API's one error shape."""
    assert isinstance(exc, HTTPException)
    detail = _HTTP_DETAIL.get(exc.status_code, exc.detail)
    response = error_response(HttpError(exc.status_code, f"{request.method} {request.url.path}: {detail}"))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the first route's method only: each method is a route here
        allowed = {m for r in request.app.router.routes if r.matches(request.scope)[0] == Match.PARTIAL
                   for m in getattr(r, "methods", None) or ()}
        response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


_HTTP_DETAIL = {404: "no such route", 405: "method not allowed"}


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected error answered as a JSON 500 without internals (Starlette re-raises it after this answer,
    so the server logs its traceback)."""
    return error_response(HttpError(500, f"internal error ({type(exc).__name__}); see the coordinator's log"))


EXCEPTION_HANDLERS: dict[Any, Any] = {HTTPException: http_exception, Exception: server_error}


def cors(settings: Settings) -> list[Middleware]:
    """CORS for the origins named in `cors_origins` (none: no CORS headers, browsers keep cross-site calls out)."""
    if not settings.cors_origins:
        return []
    return [Middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                       allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=["Authorization", "Content-Type"])]


def docs_routes() -> list[Route]:
    """`/docs` (Swagger UI), `/redoc` and their bundles, all from files inside the package."""
    async def swagger(request: Request) -> Response:
        return HTMLResponse(SWAGGER_PAGE)

    async def redoc(request: Request) -> Response:
        return HTMLResponse(REDOC_PAGE)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPException(404)
        content = files("coordinator.api").joinpath("static", name).read_bytes()
        return Response(content, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=86400"})

    return [Route("/docs", swagger, methods=["GET"]), Route("/redoc", redoc, methods=["GET"]),
            Route("/docs/static/{name}", static, methods=["GET"])]
