"""Helpers of the node agent's end-to-end tests: real agent processes against a real coordinator, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import wait_until

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


class Api:
    """The few client calls the agent tests make."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def submit(self, task_type: str = "shell", service: str = "admet", **fields: Any) -> str:
        body = {"service": service, "task_type": task_type, "name": f"test {task_type}", **fields}
        response = self.http.post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def logs(self, task_id: str) -> list[str]:
        return [line["line"] for line in self.http.get(f"/api/v1/tasks/{task_id}/logs").json()["lines"]]

    def worker(self, hostname: str) -> dict[str, Any] | None:
        """The newest worker registered under `hostname` (None until it registers)."""
        workers = [w for w in self.http.get("/api/v1/workers").json()["items"] if w["hostname"] == hostname]
        return workers[0] if workers else None

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        """The task once it is in one of `statuses`."""
        return wait_until(lambda: (t := self.task(task_id))["status"] in statuses and t, timeout,
                        f"task {task_id} to be {'/'.join(statuses)}")

    def command(self, worker_id: str, command: str, **args: Any) -> None:
        response = self.http.post(f"/api/v1/workers/{worker_id}/commands", json={"command": command, "args": args})
        assert response.status_code == 201, response.text
