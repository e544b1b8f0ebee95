"""Helpers for the console tests: the app on a real API, a scripted agent over HTTP, the record, waiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from textual.pilot import Pilot

from aiddclient.client import CoordinatorClient
from console.app import AiddConsole
from console.factory import make_app
from console.screens.live import LiveScreen
from coordinator.reconcile import rebuild_index
from coordinator.server import BackgroundServer
from tests.support.agent import HttpAgent
from tests.support.fixed import FixedState, write_fixed_state
from tests.support.waiting import await_until

WHERE = "embedded · 127.0.0.1:8333 · state ~/.local/share/aidd"
"""A fixed top-bar text (the test server's real port changes from run to run)."""


def console(server: BackgroundServer, now: Callable[[], datetime] | None = None, refresh_s: float = 0.2,
            client: CoordinatorClient | None = None, **options: Any) -> AiddConsole:
    """The console on the test's API, built the way `aidd` builds it."""
    kwargs: dict[str, Any] = {"now": now} if now is not None else {}
    return make_app(client or CoordinatorClient(server.url, timeout=10), where=WHERE, refresh_s=refresh_s,
                    animation_level="none", **kwargs, **options)


def write_fixed(server: BackgroundServer) -> FixedState:
    """The fixed demo picture in the test's record, indexed in its Redis; anchored at now (whole seconds)."""
    anchor = datetime.now(UTC).replace(microsecond=0)
    core = server.coordinator.core
    state = server.call(lambda: write_fixed_state(core.engine, anchor))
    server.call(lambda: rebuild_index(core))
    return state


async def refreshed(pilot: Pilot[Any], at_least: int = 1, timeout: float = 10.0) -> LiveScreen:
    """Wait until the current screen has applied `at_least` polls; returns it."""
    def applied() -> LiveScreen | None:
        screen = pilot.app.screen
        return screen if isinstance(screen, LiveScreen) and screen.refreshes >= at_least else None
    screen = await await_until(applied, timeout, f"the screen to apply {at_least} poll(s)", interval=0.02,
                               pause=pilot.pause)
    await pilot.pause()
    return screen


async def until(pilot: Pilot[Any], condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Let the app run until `condition()` is truthy; returns its value."""
    return await await_until(condition, timeout, what, pause=pilot.pause)


def scripted_agent(http: httpx.Client, hostname: str = "node-1", **fields: Any) -> HttpAgent:
    """A node agent scripted over HTTP, registered as the console tests show one (8 cores, 4 slots)."""
    return HttpAgent.register(http, **{"hostname": hostname, "cpu_cores": 8, "slots": 4, **fields})


def record(server: BackgroundServer, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the test's PostgreSQL (the record, not the API's view of it)."""
    async def run() -> list[dict[str, Any]]:
        async with server.coordinator.core.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(text(sql), params)).all()]
    return server.call(run)


def task_rows(server: BackgroundServer, ids: list[str]) -> dict[str, dict[str, Any]]:
    """id → status, attempts, attempt_id, end_reason of these tasks, from PostgreSQL."""
    rows = record(server, "SELECT id, status, attempts, attempt_id, end_reason, service FROM tasks "
                          "WHERE id = ANY(:ids)", ids=[uuid.UUID(i) for i in ids])
    return {str(r["id"]): r for r in rows}


class SlowTransport(httpx.AsyncBaseTransport):
    """A transport that answers, but only after `delay` seconds (a slow coordinator)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay)
        return await self.inner.handle_async_request(request)


class SwitchTransport(httpx.AsyncBaseTransport):
    """A transport that refuses to connect while `down` is set (a coordinator that went away)."""

    def __init__(self) -> None:
        self.down = False
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("All connection attempts failed", request=request)
        return await self.inner.handle_async_request(request)
