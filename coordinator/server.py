"""Run the HTTP API with uvicorn: in the foreground (`aidd --serve`) or on a background thread (console, tests)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import uvicorn

from coordinator.api.app import create_app
from coordinator.config import Settings
from coordinator.service import Coordinator

T = TypeVar("T")


def uvicorn_config(settings: Settings, app: Any, log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings shared by every way of running the API. uvicorn installs no log handlers of its own
    (`log_config=None`): its records go to the process's, in the process's format; our access log replaces its."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                          log_config=None, lifespan="on", timeout_graceful_shutdown=5, loop="auto", http="auto")


class ApiServer(uvicorn.Server):
    """uvicorn's server, ending the long-polling leases first when it shuts down: they would otherwise hold the
    graceful shutdown for its whole timeout and then be cancelled with a traceback in the log."""

    def __init__(self, config: uvicorn.Config, coordinator: Coordinator) -> None:
        super().__init__(config)
        self.coordinator = coordinator

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Answer the waiting leases (empty), then shut down as uvicorn does."""
        self.coordinator.core.waker.close()
        await super().shutdown(sockets)


def _already_stopping(signum: int, frame: object) -> None:
    """uvicorn re-raises the signal it shut down on; by then the server has stopped, so carry on and clean up."""


def serve_forever(settings: Settings) -> None:
    """Serve until SIGTERM / SIGINT (uvicorn handles both and shuts down cleanly), then return normally.

    Without our own handlers the signal uvicorn re-raises after its shutdown would kill the process (SIGTERM)
    before the caller stops the embedded servers and releases the state directory.
    """
    app = create_app(settings, freeze_gc=True)
    server = ApiServer(uvicorn_config(settings, app, settings.log_level), app.state.coordinator)
    previous = {sig: signal.signal(sig, _already_stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise SystemExit(1)


class BackgroundServer:
    """The API on a thread of its own with its own event loop; `call` runs coordinator coroutines there."""

    def __init__(self, settings: Settings, timers: bool = True, log_level: str = "warning") -> None:
        self.settings = settings
        self.app = create_app(settings, timers=timers)
        self.coordinator: Coordinator = self.app.state.coordinator
        self.server = ApiServer(uvicorn_config(settings, self.app, log_level), self.coordinator)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="aidd-api", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
        finally:
            self.loop.close()

    @property
    def url(self) -> str:
        """Base URL of the running API (the real port when port 0 was asked for)."""
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        port = sockets[0].getsockname()[1] if sockets else self.settings.port
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        return f"http://{host}:{port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start and wait until it accepts connections (raises if it could not)."""
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.05)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"API did not start: {self.error or 'timeout'}")
        return self

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run `factory()` on the server's loop and wait for its result."""
        assert self.loop is not None

        async def run() -> T:
            return await factory()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self) -> None:
        """Shut down gracefully and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=15)
