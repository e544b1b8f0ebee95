"""Helpers of the node agent's end-to-end tests: real agent processes against a real coordinator, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class AgentProcess:
    """`python -m nodeagent.cli` as a child process, its output in a file (shown when a test fails)."""

    def __init__(self, url: str, work: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        self.work_dir = work / f"{name}-tasks"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIDD_", "WORKER_GROUP"))}
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environ.get("PYTHONPATH", "")) if p)
        environ.update(env or {})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodeagent.cli", "--url", url, "--hostname", name, "--work-dir", str(self.work_dir),
             "--kill-grace", "1", *args], cwd=ROOT, env=environ, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the agent and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """kill -9: no chance to report, hand back or deregister."""
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

