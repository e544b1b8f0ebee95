"""`aidd --local-agent`: a node agent on this machine that outlives the console, one per state directory.

The agent runs in a session of its own without a parent-death signal, so a console that quits or is killed
(`kill -9`, its terminal closed) leaves it running its tasks: it rides through the coordinator's absence and
delivers their results when a coordinator answers at its URL again. It is recorded in `STATE_DIR/agent.pid`; the
next `aidd --local-agent` on that state directory reuses it, and only "stop everything" or `aidd stop` ends it.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from console.background import AGENT_FILE, AGENT_MODULE, Detached, recorded, spawn, stop

log = logging.getLogger(__name__)

HAND_BACK_AFTER_S = 5
"""When everything is stopped, the agent's running tasks get this long before they are handed back to the queue."""
NOT_AVAILABLE = ("--local-agent: the node agent (nodeagent) is not available in this installation, so no local "
                 "agent was started; tasks wait until an agent connects (aidd-agent --url URL).")


def agent_available(module: str = AGENT_MODULE) -> bool:
    """Whether `python -m nodeagent.cli` can run here."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class LocalAgent:
    """The state directory's agent process: started here, or the live one a previous console left running."""

    def __init__(self, url: str, state_dir: Path, token: str | None = None, slots: int | None = None,
                 module: str = AGENT_MODULE) -> None:
        self.url, self.token, self.slots, self.module = url, token, slots, module
        self.log_path, self.pid_file = state_dir / "agent.log", state_dir / AGENT_FILE
        self.record: Detached | None = None
        self.process: subprocess.Popen[bytes] | None = None
        """The process when this console started it (None when it reused one)."""
        self.notice: str | None = None
        """What the operator should know about how the agent was found (e.g. one for another URL was replaced)."""

    def command(self) -> list[str]:
        """The agent's command line."""
        argv = [sys.executable, "-m", self.module, "--url", self.url, "--grace", str(HAND_BACK_AFTER_S)]
        if self.token:
            argv += ["--token", self.token]
        if self.slots:
            argv += ["--slots", str(self.slots)]
        return argv

    def start(self) -> LocalAgent:
        """Reuse the state directory's live agent if it works for this URL; else (stopping one that works for
        another URL) start one, detached, its output appended to `agent.log`."""
        found = recorded(self.pid_file, self.module)
        if found is not None and found.url == self.url:
            self.record = found
            log.info("reusing the local agent (pid %d) for %s", found.pid, self.url)
            return self
        if found is not None:
            stop(found, self.pid_file, HAND_BACK_AFTER_S + 10.0)
            self.notice = (f"The local agent (pid {found.pid}) worked for {found.url}; it was stopped and a new "
                           f"one started for {self.url}.")
        self.record, self.process = spawn(self.command(), self.log_path, self.pid_file, self.url)
        log.info("local agent started (pid %d), output in %s", self.record.pid, self.log_path)
        return self

    def ended(self) -> str | None:
        """How the agent ended (`exit code 1`) once it has; None while it runs."""
        if self.process is not None:
            code = self.process.poll()
            return None if code is None else f"exit code {code}"
        return None if self.record is None or self.record.alive() else "it exited"

    def stop(self, grace_s: float = HAND_BACK_AFTER_S + 10.0) -> None:
        """SIGTERM the agent (it hands back its running tasks), SIGKILL after `grace_s`; forget its pid file."""
        if self.record is None or not self.record.alive():
            return
        print(f"stopping the local agent (running tasks are handed back within {HAND_BACK_AFTER_S}s)...",
              file=sys.stderr, flush=True)
        stop(self.record, self.pid_file, grace_s)
        if self.process is not None:  # reap it (it may be a moment from gone to reapable)
            self.process.wait(5)
