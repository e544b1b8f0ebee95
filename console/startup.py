"""The embedded coordinator coming up on a thread of its own, so that the console draws its first frame at once.

The console's first frame needs Textual and the panes; the coordinator needs the embedded Redis and PostgreSQL
(a second or more; the first `initdb` longer), the server's libraries (sqlalchemy, starlette, uvicorn: a second
to import) and its own start. `EmbeddedStart` does all that on a thread that lives as long as the stores (they
die with the thread that started them), and says how far it got in plain attributes the console reads on a
timer: `stage` while it starts, then `client`, or `error`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiddclient.client import CoordinatorClient

if TYPE_CHECKING:
    from console.localagent import LocalAgent
    from coordinator.config import Settings
    from coordinator.server import BackgroundServer

log = logging.getLogger(__name__)

FRAME_WAIT_S = 5.0
"""How long the server's imports and start wait for the console's first frame (a console that never draws)."""
OpenStores = Callable[["Settings", Callable[[str], None]], contextlib.AbstractContextManager["Settings"]]
"""`coordinator.runtime.stores`' shape: settings and a progress callback in, settings with store URLs out."""


@dataclass
class Started:
    """What the console shows once the embedded coordinator is up."""

    where: str
    """The top bar's text about the coordinator."""
    notices: list[str] = field(default_factory=list)
    """What to tell the operator (e.g. the configured port was taken)."""
    local_agent: LocalAgent | None = None
    """The local agent started for it, to watch."""


class EmbeddedStart:
    """The stores and the API of the embedded coordinator, started (and, at `stop`, stopped) on their own thread."""

    def __init__(self, settings: Settings, api_key: str | None, client_timeout: float,
                 open_stores: OpenStores | None = None,
                 then: Callable[[Settings, str], Started] | None = None) -> None:
        """Args:
            settings: the configured settings (no store URLs: the embedded stores give them).
            api_key: the key the console's client sends.
            client_timeout: the console's client timeout.
            open_stores: how the stores are opened (default `coordinator.runtime.stores`; tests pass a slow one).
            then: run on the thread once the API answers, with the ready settings and its URL (the local agent
                and the demo cluster start there); returns what the console is to show (default: the URL).
        """
        self.stage = "starting Redis and PostgreSQL…"
        """What the start is waiting for now (the top bar shows it)."""
        self.client: CoordinatorClient | None = None
        """The console's client on the running API; set last, when everything is up."""
        self.started = Started("")
        """What the console shows once the coordinator is up (set before `client`)."""
        self.error: str | None = None
        """Why the start failed, or why the stores stopped (one line); the console then exits 1."""
        self._settings, self._api_key, self._timeout = settings, api_key, client_timeout
        if open_stores is None:
            from coordinator.runtime import stores

            open_stores = stores
        self._open_stores: OpenStores = open_stores
        self._then = then
        self.first_frame = threading.Event()
        """Set by the console once its first frame is drawn: the server's imports and start wait for it (at most
        FRAME_WAIT_S), so that the frame does not share the interpreter with them; the stores start at once."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aidd-embedded-start", daemon=True)

    @property
    def url(self) -> str | None:
        """The API's URL once it answers."""
        return self.client.url if self.client is not None else None

    def start(self) -> EmbeddedStart:
        """Start the thread (and, beside it, the import of the server's libraries once the first frame is up)."""
        threading.Thread(target=self._import_server, name="aidd-import", daemon=True).start()
        self._thread.start()
        return self

    def _import_server(self) -> None:
        """Import the server's modules while the stores start (after the first frame), not after they answer."""
        self.first_frame.wait(FRAME_WAIT_S)
        with contextlib.suppress(Exception):  # a failure is left for start_api to report
            importlib.import_module("coordinator.server")

    def stop(self) -> None:
        """Stop the API and the stores (also one still starting) and wait for them."""
        self._stopping.set()
        self._thread.join()

    def _progress(self, stage: str) -> None:
        self.stage = stage

    def _run(self) -> None:
        try:
            with self._open_stores(self._settings, self._progress) as ready:
                self.stage = "starting the coordinator…"
                self.first_frame.wait(FRAME_WAIT_S)
                server, notices = start_api(ready)
                try:
                    started = self._then(ready, server.url) if self._then else Started(server.url)
                    started.notices[:0] = notices
                    self.started = started
                    self.client = CoordinatorClient(server.url, self._api_key, timeout=self._timeout)
                    self._stopping.wait()
                finally:
                    server.stop()
        except Exception as exc:  # the console shows it as one line and exits 1
            log.exception("the embedded coordinator failed")
            self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def start_api(settings: Settings) -> tuple[BackgroundServer, list[str]]:
    """The API on its own thread, on the configured port or, if that is taken, on a free one (with a notice)."""
    from coordinator.server import BackgroundServer

    notices: list[str] = []
    if settings.port and not _port_free(settings.host, settings.port):
        notices.append(f"Port {settings.port} is taken (another aidd?); this coordinator listens on a free port "
                       "instead, shown at the top right.")
        settings = settings.model_copy(update={"port": 0})
    return BackgroundServer(settings).start(), notices


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
