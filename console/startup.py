"""The embedded coordinator coming up in a process of its own, so that the console draws its first frame at once.

The console's first frame needs Textual and the panes; the coordinator needs the embedded Redis and PostgreSQL
(a second or more; the first `initdb` longer), the server's libraries (sqlalchemy, starlette, uvicorn: a second
to import) and its own start. `EmbeddedStart` starts all that at once as `python -m console.child`
(console/child.py), which runs on another core while this process imports Textual, and says how far it got
in plain attributes the console reads on a timer: `stage` while it starts, then `client`, or `error`.

The child lives as long as its stdin pipe from this process: quitting closes it, and so does this process's
death however it dies (no orphan); "keep running" tells it to stay first (`keep`), and records it as the state
directory's background coordinator.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiddclient.client import CoordinatorClient
from console import child
from console.background import (
    COORDINATOR_FILE,
    COORDINATOR_MODULE,
    COORDINATOR_STOP_S,
    Detached,
    child_env,
    write_record,
)

if TYPE_CHECKING:
    from console.localagent import LocalAgent
    from coordinator.config import Settings

log = logging.getLogger(__name__)


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
    """The embedded coordinator's process: started, watched while it comes up, then stopped or kept running."""

    def __init__(self, settings: Settings, api_key: str | None, client_timeout: float, config: Path | None = None,
                 then: Callable[[Settings, str], Started] | None = None, argv: list[str] | None = None) -> None:
        """Args:
            settings: the configured settings (its state directory, host and port are the child's).
            api_key: the key the console's client sends.
            client_timeout: the console's client timeout.
            config: the config file the child reads (default: the one it finds as `aidd` does).
            then: run once the API answers, with the settings and its URL (the local agent and the demo cluster
                start there); returns what the console is to show (default: the URL).
            argv: the child's command (default `python -m console.child ...`; tests pass one that takes its time).
        """
        self.stage = "starting Redis and PostgreSQL…"
        """What the start is waiting for now (the top bar shows it)."""
        self.client: CoordinatorClient | None = None
        """The console's client on the running API; set last, when everything is up."""
        self.started = Started("")
        """What the console shows once the coordinator is up (set before `client`)."""
        self.error: str | None = None
        """Why the start failed (one line); the console then exits 1."""
        self._settings, self._api_key, self._timeout, self._then = settings, api_key, client_timeout, then
        self._argv = argv or child.command(settings.state_dir, settings.host, settings.port, config)
        self.log_path = settings.state_dir / "coordinator.log"
        """Where the child's log goes (appended)."""
        self.process: subprocess.Popen[str] | None = None
        self._reader = threading.Thread(target=self._read, name="aidd-embedded-start", daemon=True)

    @property
    def url(self) -> str | None:
        """The API's URL once it answers."""
        return self.client.url if self.client is not None else None

    def start(self) -> EmbeddedStart:
        """Start the child, in a session of its own (a terminal's hang-up reaches it only through its stdin)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out,
                                            env=child_env(), start_new_session=True, text=True, encoding="utf-8")
        self._reader.start()
        return self

    def _read(self) -> None:
        """Follow the child's report lines until it is ready (or failed); start the companions then."""
        assert self.process is not None and self.process.stdout is not None
        notices: list[str] = []
        for line in self.process.stdout:
            kind, _, text = line.rstrip("\n").partition(" ")
            if kind == "stage":
                self.stage = text
            elif kind == "notice":
                notices.append(text)
            elif kind == "error":
                self.error = text
            elif kind == "ready":
                try:
                    started = self._then(self._settings, text) if self._then else Started(text)
                except Exception as exc:  # the console shows it as one line and exits 1
                    log.exception("starting beside the embedded coordinator failed")
                    self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    return
                started.notices[:0] = notices
                self.started = started
                self.client = CoordinatorClient(text, self._api_key, timeout=self._timeout)
        if self.client is None and self.error is None:
            self.error = (f"the coordinator exited (exit code {self.process.wait()}) before it answered; "
                          f"its log: {self.log_path}")

    def keep(self) -> Detached | None:
        """Leave the running coordinator running past the console, recorded as the state directory's background
        coordinator; None (and nothing kept) if it does not answer yet."""
        if self.process is None or self.url is None or self.process.poll() is not None:
            return None
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(f"{child.KEEP}\n")
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            return None
        return write_record(self.process.pid, COORDINATOR_MODULE, self.url, self._settings.state_dir / COORDINATOR_FILE)

    def stop(self) -> None:
        """Stop the coordinator and its stores (also one still starting) and wait for it; killed after
        COORDINATOR_STOP_S."""
        if self.process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(COORDINATOR_STOP_S)
        except subprocess.TimeoutExpired:
            log.warning("the embedded coordinator (pid %d) did not stop in %.0f s: killed", self.process.pid,
                        COORDINATOR_STOP_S)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reader.join(5)
