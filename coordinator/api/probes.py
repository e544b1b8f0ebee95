"""Probes for service managers and orchestrators: `/livez` (restart me if this fails) and `/readyz` (send me traffic).

Liveness asks nothing of the stores: a restart does not fix PostgreSQL, so a store outage must not restart every
coordinator. Both answer without a key and for any Host (a kubelet probes the pod's address), and say the version.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from coordinator.api.answers import Probe
from coordinator.api.auth import Access
from coordinator.api.http import JSONResponse
from coordinator.api.routing import Api, Ctx

api = Api("probes")
PROBE_PATHS = frozenset({"/livez", "/readyz"})
"""Answered for any Host header (see `guard.HostOriginGuard`): they carry no data but the version."""


@api.route("GET", "/livez", Access.PUBLIC, "The process and its event loop answer (200), with the version",
           returns=Probe)
async def livez(request: Request, ctx: Ctx) -> Any:
    return {"status": "ok", "version": request.app.state.version}


@api.route("GET", "/readyz", Access.PUBLIC, "Redis and PostgreSQL answer, the schema is current, a leader runs the "
           "timers: 200, else 503 naming what is not ready; with the version", returns=Probe)
async def readyz(request: Request, ctx: Ctx) -> Any:
    checks = await ctx.coordinator.readiness()
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "not ready", "version": request.app.state.version, **checks}
    if not ready:  # the one error shape, as every other refusal: `error` says what is not ready
        body["error"] = "not ready: " + ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
    return JSONResponse(body, status_code=200 if ready else 503)
