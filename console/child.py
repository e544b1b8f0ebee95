"""The embedded coordinator in a process of its own: `python -m console.child`, started by the console.

Its own process, so that its imports (SQLAlchemy, Starlette, uvicorn) and the embedded stores' start run on
another core while the console imports Textual and draws its first frame, instead of sharing one interpreter
and its GIL with the console. It tells the console how far it got, one line each on its stdout:
`stage TEXT` (the top bar shows it), `notice TEXT`, then `ready URL`, or `error TEXT` before it exits 1. It
listens on its stdin: the end of it (the console quit, or died however it died) stops it and its stores; the
line `keep` before that end keeps it running as the state directory's background coordinator until SIGTERM
(`aidd stop`). Its log goes to stderr (the console appends it to `STATE_DIR/coordinator.log`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from coordinator.config import Settings
    from coordinator.server import BackgroundServer

log = logging.getLogger(__name__)

KEEP = "keep"
"""The line on its stdin that keeps it running once the console has gone."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Reporter:
    """The child's side of its stdout pipe to the console: one `KIND TEXT` line each, until `ready` or `error`."""

    def __init__(self, out: TextIO) -> None:
        self.out: TextIO | None = out

    def say(self, kind: str, text: str) -> None:
        """Write one line; a console that has gone is no error (it no longer listens)."""
        if self.out is None:
            return
        try:
            self.out.write(f"{kind} {' '.join(text.split())}\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            self.out = None

    def close(self) -> None:
        """Stop reporting: the pipe is closed (the console's reader ends), fd 1 goes to the log from now on."""
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.close()
            self.out = None
        os.dup2(2, 1)


def serve(settings: Settings, control: TextIO, report: Reporter) -> int:
    """Start the stores and the API, say so, serve until `control` ends (or, after `keep`, until SIGTERM)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    threading.Thread(target=_watch, args=(control, stop), name="aidd-console-link", daemon=True).start()
    threading.Thread(target=_import_server, name="aidd-import", daemon=True).start()
    try:
        from coordinator.runtime import stores

        with stores(settings, lambda stage: report.say("stage", stage)) as ready:
            report.say("stage", "starting the coordinator…")
            server, notices = start_api(ready)
            try:
                for notice in notices:
                    report.say("notice", notice)
                report.say("ready", server.url)
                report.close()
                log.info("coordinator for the console at %s (pid %d)", server.url, os.getpid())
                stop.wait()
            finally:
                server.stop()
    except Exception as exc:  # the console prints it as one line and exits 1
        log.exception("the embedded coordinator failed")
        report.say("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return 1
    return 0


def _watch(control: TextIO, stop: threading.Event) -> None:
    """Stop when the console's end of stdin closes, unless it said `keep` first."""
    with contextlib.suppress(OSError, ValueError):
        for line in control:
            if line.strip() == KEEP:
                log.info("the console quit and keeps this coordinator running in the background")
                return
    stop.set()


def _import_server() -> None:
    """Import the server's modules while the stores start (waiting for them leaves the GIL free)."""
    with contextlib.suppress(Exception):  # a failure is left for start_api to report
        importlib.import_module("coordinator.server")


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


def command(state_dir: Path, host: str, port: int, config: Path | None) -> list[str]:
    """The command line that starts it for this state directory, host, port and config file."""
    return [sys.executable, "-m", __name__, "--state-dir", str(state_dir), "--host", host, "--port", str(port),
            *(["--config", str(config.resolve())] if config else [])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.child", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    report = Reporter(sys.stdout)
    try:
        from coordinator.config import load_settings

        settings = load_settings(args.config, state_dir=args.state_dir, host=args.host, port=args.port)
    except Exception as exc:
        report.say("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return 1
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("aidd.access").setLevel(logging.WARNING)  # the console's own polls, several a second
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    return serve(settings, sys.stdin, report)


if __name__ == "__main__":
    raise SystemExit(main())
