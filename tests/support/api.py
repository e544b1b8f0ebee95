"""The tests' synchronous client of one coordinator, over raw httpx."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import wait_until


def _answer(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of an answer with the expected status; httpx.HTTPStatusError (with the body's start) otherwise."""
    if response.status_code != status:
        raise httpx.HTTPStatusError(f"{response.status_code}: {response.text[:300]}", request=response.request,
                                    response=response)
    return response.json()


class Api:
    """The few client calls the agent and fault tests make.

    Not `aiddclient.client.CoordinatorClient`: that one is async and turns every failure into its ApiError, while
    these tests run synchronously (on a TestClient or a real server's URL) and the fault suite tells a refused
    submission from a lost connection by httpx's own errors, which this raises unchanged.
    """

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    @classmethod
    def connect(cls, url: str, key: str | None = None, timeout: float = 30.0) -> Api:
        """A client of its own for the coordinator at `url` (with an API key when it has keys); `close` it."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return cls(httpx.Client(base_url=url, headers=headers, timeout=timeout))

    def close(self) -> None:
        self.http.close()

    def submit(self, task_type: str = "shell", service: str = "admet", **fields: Any) -> str:
        """Submit one task (named for its type); its id."""
        body = {"service": service, "task_type": task_type, "name": f"test {task_type}", **fields}
        return str(_answer(self.http.post("/api/v1/tasks", json=body), 201)["id"])

    def submit_batch(self, bodies: list[dict[str, Any]]) -> list[str]:
        """Submit tasks as one batch; their ids once the coordinator acknowledged them."""
        return [str(i) for i in _answer(self.http.post("/api/v1/tasks", json={"tasks": bodies}), 201)["ids"]]

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(_answer(self.http.get(f"/api/v1/tasks/{task_id}")))

    def logs(self, task_id: str) -> list[str]:
        return [line["line"] for line in _answer(self.http.get(f"/api/v1/tasks/{task_id}/logs"))["lines"]]

    def workers(self) -> list[dict[str, Any]]:
        return list(_answer(self.http.get("/api/v1/workers"))["items"])

    def worker(self, hostname: str) -> dict[str, Any] | None:
        """The newest worker registered under `hostname` (None until it registers)."""
        found = [w for w in self.workers() if w["hostname"] == hostname]
        return found[0] if found else None

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        """The task once it is in one of `statuses`."""
        return wait_until(lambda: (t := self.task(task_id))["status"] in statuses and t, timeout,
                          f"task {task_id} to be {'/'.join(statuses)}")

    def command(self, worker_id: str, command: str, **args: Any) -> None:
        _answer(self.http.post(f"/api/v1/workers/{worker_id}/commands", json={"command": command, "args": args}), 201)

    def counters(self) -> dict[str, int]:
        """Tasks by status, as the dashboard counts them."""
        return dict(_answer(self.http.get("/api/v1/stats/dashboard"))["counters"])
