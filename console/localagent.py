"""`aidd --local-agent`: a node agent on this machine as a child process, stopped when the console stops."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from coordinator.children import die_with_parent

log = logging.getLogger(__name__)

AGENT_MODULE = "nodeagent.cli"
HAND_BACK_AFTER_S = 5
"""When the console quits, the agent's running tasks get this long before they are handed back to the queue."""
NOT_AVAILABLE = ("--local-agent: the node agent (nodeagent) is not available in this installation, so no local "
                 "agent was started; tasks wait until an agent connects (aidd-agent --url URL).")


def agent_available(module: str = AGENT_MODULE) -> bool:
    """Whether `python -m nodeagent.cli` can run here."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class LocalAgent:
    """The agent process: its output goes to `log_path`; `stop()` ends its whole process group."""

    def __init__(self, url: str, log_path: Path, token: str | None = None, slots: int | None = None,
                 module: str = AGENT_MODULE) -> None:
        self.url, self.log_path, self.token, self.slots, self.module = url, log_path, token, slots, module
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The agent's command line."""
        argv = [sys.executable, "-m", self.module, "--url", self.url, "--grace", str(HAND_BACK_AFTER_S)]
        if self.token:
            argv += ["--token", self.token]
        if self.slots:
            argv += ["--slots", str(self.slots)]
        return argv

    def start(self) -> LocalAgent:
        """Start the agent in its own process group."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the agent imports what this interpreter can import (agent_available() looked here)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=die_with_parent(signal.SIGTERM))
        log.info("local agent started (pid %d), output in %s", self.process.pid, self.log_path)
        return self

    def returncode(self) -> int | None:
        """The exit code once the agent has stopped, else None."""
        return None if self.process is None else self.process.poll()

    def stop(self, grace_s: float = HAND_BACK_AFTER_S + 10.0) -> None:
        """SIGTERM the agent's process group (it hands back its tasks), SIGKILL after `grace_s`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        print(f"stopping the local agent (running tasks are handed back within {HAND_BACK_AFTER_S}s)...",
              file=sys.stderr, flush=True)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            pass
