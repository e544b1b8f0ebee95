"""The access log and request ids: every HTTP request gets an id (the caller's `X-Request-ID` when it sends a sane
one), returned in the response's `X-Request-ID` header, written in error bodies, and logged with the request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.http import REQUEST_ID

log = logging.getLogger("aidd.access")
HEADER = b"x-request-id"
GIVEN_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
"""A caller's request id is kept when it is this plain (a proxy's or a pipeline's), so one id follows a request
through every log; anything else is replaced."""


def _given_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER and GIVEN_ID.match(value):
            return value.decode()
    return None


class AccessLog:
    """ASGI middleware, outermost: the request id for everything inside it, and one record per request on logger
    `aidd.access` (when `enabled`): method, path, status, duration, client and id; at info level, or debug for
    the answered requests of a routine route (a heartbeat: `Endpoint.routine`; a line each cost ~90 µs of a beat)."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app, self.enabled = app, enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _given_id(scope) or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # unless a response starts: an error escaped every handler

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (HEADER, request_id.encode())]}
            await send(message)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            routine = status < 400 and getattr(scope.get("route"), "routine", False)
            level = logging.DEBUG if routine else logging.INFO
            if self.enabled and log.isEnabledFor(level):
                duration_ms = round((time.perf_counter() - started) * 1000, 1)
                client = scope.get("client")
                log.log(level, "%s %s %d %.1f ms id=%s", scope["method"], scope["path"], status, duration_ms,
                        request_id, extra={"method": scope["method"], "path": scope["path"], "status": status,
                                           "duration_ms": duration_ms, "request_id": request_id,
                                           "client": client[0] if client else None})
