"""A node agent scripted over the real HTTP API: each call is one request the test chooses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class HttpAgent:
    """A node agent speaking the real HTTP API with its own worker token."""

    client: httpx.Client
    id: str
    token: str

    @classmethod
    def register(cls, client: httpx.Client, token: str | None = None, **fields: Any) -> HttpAgent:
        """Register a worker (hostname `node` unless `fields` name one); `token` is the caller's API key."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = client.post("/api/v1/workers/register", json={"hostname": "node", **fields}, headers=headers)
        assert reply.status_code == 201, reply.text
        return cls(client, reply.json()["id"], reply.json()["token"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, what: str, body: Any) -> httpx.Response:
        """POST to one of this worker's routes (heartbeat, lease, reports)."""
        return self.client.post(f"/api/v1/workers/{self.id}/{what}", json=body, headers=self.headers)

    def lease(self, max_tasks: int = 1, **ask: Any) -> list[dict[str, Any]]:
        """Take up to `max_tasks` tasks without waiting (they become running)."""
        reply = self.post("lease", {"max_tasks": max_tasks, **ask})
        assert reply.status_code == 200, reply.text
        return list(reply.json()["tasks"])

    def report(self, leased: dict[str, Any], event: str = "succeeded", **fields: Any) -> httpx.Response:
        """Report one event about a leased attempt; the answer is the caller's to check."""
        return self.post("reports", {"events": [{"task_id": leased["task_id"], "attempt_id": leased["attempt_id"],
                                                 "event": event, **fields}]})

    def succeed(self, leased: dict[str, Any], result: Any) -> None:
        """Report the attempt succeeded with `result` (the report must be accepted)."""
        self.report(leased, "succeeded", result=result).raise_for_status()

    def fail(self, leased: dict[str, Any], error: str = "boom") -> None:
        """Report the attempt failed (exit code 1; the report must be accepted)."""
        self.report(leased, "failed", error=error, exit_code=1).raise_for_status()

    def heartbeat(self, current_tasks: list[str]) -> dict[str, Any]:
        """One heartbeat naming the tasks this agent runs; the answer carries commands (e.g. cancel-task)."""
        reply = self.post("heartbeat", {"current_tasks": current_tasks})
        reply.raise_for_status()
        return dict(reply.json())

    def confirm_stopped(self) -> int:
        """Acknowledge every cancel-task command, as an agent does once the attempt's process is gone."""
        path = f"/api/v1/workers/{self.id}/commands"
        commands = self.client.get(path, headers=self.headers).json()["items"]
        kills = [c["id"] for c in commands if c["command"] == "cancel-task"]
        if not kills:
            return 0
        reply = self.client.request("DELETE", path, json={"ids": kills}, headers=self.headers)
        assert reply.status_code == 200, reply.text
        return int(reply.json()["acked"])
