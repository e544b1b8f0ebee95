"""Refuse requests for other hosts (DNS rebinding) and cross-site mutating requests, before any route runs."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from coordinator.api.http import HttpError, error_response
from coordinator.api.probes import PROBE_PATHS
from coordinator.config import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _hostname(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "").lower()


class HostOriginGuard:
    """ASGI middleware: Host must be one this coordinator answers to; a mutating call's Origin must match it or be
    one of `cors_origins`. The probes are answered for any Host: orchestrators call them by address."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.allowed = {h.lower() for h in settings.allowed_hosts}
        if settings.is_loopback:
            self.allowed |= LOOPBACK_NAMES | {settings.host}
        self.check_host = settings.is_loopback or bool(settings.allowed_hosts)
        self.cors_origins = {o.rstrip("/").lower() for o in settings.cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBE_PATHS:
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
            host = _hostname(headers.get("host", ""))
            problem = None
            if self.check_host and host not in self.allowed:
                problem = HttpError(421, f"host {host!r} is not served here (allowed_hosts)")
            elif scope["method"] in MUTATING and "origin" in headers:
                origin = urlsplit(headers["origin"]).hostname or headers["origin"]
                if origin.lower() != host and headers["origin"].rstrip("/").lower() not in self.cors_origins:
                    problem = HttpError(403, "cross-origin request refused")
            if problem is not None:
                await error_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)
