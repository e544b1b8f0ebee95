"""Request durations for Prometheus, labelled by route template (never the raw path: ids would make a series each)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.metrics import Metrics, Series

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route label of requests no route took (404, or refused by the guard before routing)."""


class RequestTimer:
    """ASGI middleware, outermost: `aidd_http_request_duration_seconds{method, route}` and
    `aidd_http_requests_total{method, route, status}`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.durations, self.counts = Series(metrics.http), Series(metrics.http_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app fails before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED  # set by the router on a match
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.durations(method, route).observe(time.perf_counter() - started)
            self.counts(method, route, str(status)).inc()
