"""`aidd` (the console): on the embedded coordinator, or attached to a remote one; optional agent and demo.

Embedded: the stores (embedded Redis/PostgreSQL unless configured) run on the main thread, the API on a
thread of its own (`BackgroundServer`), and the console talks to it over HTTP with the same client it
uses when attached, so both modes behave the same.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from console.demo.cluster import DemoCluster
from console.factory import make_app
from console.localagent import NOT_AVAILABLE, LocalAgent, agent_available
from coordinator.client import CoordinatorClient
from coordinator.config import Settings
from coordinator.runtime import check_exposure, stores
from coordinator.server import BackgroundServer

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 10.0
"""How long the console waits for one answer before it says the coordinator does not answer."""


def _log_to_file(path: Path) -> None:
    """Send every log record (ours, uvicorn's) to `path`: the terminal belongs to the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = name == ""
    logging.getLogger().setLevel(logging.INFO)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _home(path: Path) -> str:
    """`path` with the home directory written as ~ (shorter in the top bar)."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


def _operator_key(settings: Settings, api_key: str | None) -> str | None:
    """The key the embedded console uses: the one given, else the first operator key configured."""
    if api_key:
        return api_key
    return next((k.key for k in settings.api_keys if k.role == "operator"), None)


def run_console(settings: Settings, attach_url: str | None = None, api_key: str | None = None,
                local_agent: bool = False, demo: bool = False, read_only: bool = False) -> int:
    """Run the console until the operator quits; returns the exit code."""
    log_path = settings.state_dir / "console.log"
    _log_to_file(log_path)
    if attach_url:
        return _run(settings, attach_url, api_key, f"attached · {attach_url}", local_agent, demo, read_only, [])
    check_exposure(settings)
    with stores(settings) as ready:
        server, notices = start_api(ready)
        _log_to_file(log_path)  # uvicorn configured its own handlers when the server was built
        try:
            where = f"embedded · {server.url.removeprefix('http://')} · state {_home(settings.state_dir)}"
            return _run(ready, server.url, _operator_key(ready, api_key), where, local_agent, demo, read_only,
                        notices)
        finally:
            server.stop()


def start_api(settings: Settings) -> tuple[BackgroundServer, list[str]]:
    """The API on its own thread, on the configured port or, if that is taken, on a free one (with a notice)."""
    notices: list[str] = []
    if settings.port and not _port_free(settings.host, settings.port):
        notices.append(f"Port {settings.port} is taken (another aidd?); this coordinator listens on a free port "
                       "instead, shown at the top right.")
        settings = settings.model_copy(update={"port": 0})
    return BackgroundServer(settings).start(), notices


def _run(settings: Settings, url: str, api_key: str | None, where: str, local_agent: bool, demo: bool,
         read_only: bool, notices: list[str]) -> int:
    agent: LocalAgent | None = None
    if local_agent:
        if agent_available():
            agent = LocalAgent(url, settings.state_dir / "agent.log", token=settings.agent_token).start()
            where += " · local agent"
        else:
            notices.append(NOT_AVAILABLE)
    cluster = DemoCluster(url, api_key, settings.agent_token, settings.state_dir).start() if demo else None
    client = CoordinatorClient(url, api_key, timeout=CLIENT_TIMEOUT_S)
    app = make_app(client, where=where, read_only=read_only, demo=demo, state_dir=settings.state_dir,
                   notices=notices, local_agent=agent, freeze_gc=True)
    try:
        code = app.run()
    finally:
        if cluster is not None:
            cluster.stop()
        if agent is not None:
            agent.stop()
    return code or 0
