"""An async HTTP client for the coordinator's client API (used by the CLI and the console).

httpx (with the rich and click it pulls in, 0.1 s) is imported when the first client is built, not with this
module; `aidd --help` and the CLI's parser import neither (`aiddclient.DEFAULT_URL` is their default URL).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from aiddclient import DEFAULT_URL
from aiddclient.views import (
    BatchView,
    ClusterTotals,
    Dashboard,
    ServiceView,
    TaskCounts,
    TaskPage,
    TaskView,
    WorkerView,
)

if TYPE_CHECKING:
    import httpx

    from aiddwire import CommandKind



class ApiError(Exception):
    """An error answer from the coordinator, or no answer; `str()` is one readable line."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field


def _error(response: httpx.Response) -> ApiError:
    """The one-line error of an error answer."""
    try:
        body = response.json()
        return ApiError(body.get("error", response.text), response.status_code, body.get("field"))
    except ValueError:
        return ApiError(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)


def _ids(ids: Sequence[uuid.UUID | str]) -> list[str]:
    return [str(i) for i in ids]


SINGLE_ACTIONS = {"cancel": ("DELETE", "/api/v1/tasks/{}"), "retry": ("POST", "/api/v1/tasks/{}/retry"),
                  "requeue": ("POST", "/api/v1/tasks/{}/requeue")}
"""One task's own action routes: they take the attempt the caller saw, so an action never hits a newer attempt."""


class CoordinatorClient:
    """One method per client endpoint; every error becomes an ApiError.

    Methods named for what they return (`tasks`, `task`, `workers`, `worker`, `batches`, `services`,
    `task_stats`, `worker_stats`, `dashboard`) give typed views (`aiddclient.views`), which the console reads;
    `list_tasks`, `get_task`, `list_workers` and `list_services` give the answer's JSON as it came, which the
    CLI prints whole.
    """

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the JSON answer or raise ApiError."""
        import httpx

        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the coordinator at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    async def stream(self, path: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """The body of a GET answer as it arrives (an error answer raises ApiError)."""
        import httpx

        try:
            async with self.http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                async for chunk in response.aiter_bytes():
                    yield chunk
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the coordinator at {self.url}: {type(exc).__name__}: {exc}") from None

    # tasks
    async def submit(self, task: dict[str, Any]) -> dict[str, Any]:
        """Submit one task; returns it as stored."""
        return await self.request("POST", "/api/v1/tasks", json=task)  # type: ignore[no-any-return]

    async def submit_batch(self, tasks: list[dict[str, Any]], name: str = "", batch_id: str | None = None,
                           defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """Submit tasks all-or-nothing; returns {batch_id, count, ids}."""
        body: dict[str, Any] = {"tasks": tasks, "name": name, "defaults": defaults or {}}
        if batch_id:
            body["batch_id"] = batch_id
        return await self.request("POST", "/api/v1/tasks", json=body)  # type: ignore[no-any-return]

    async def list_tasks(self, page: int = 1, page_size: int = 50, sort: str = "-created_at",
                         **filters: Any) -> dict[str, Any]:
        """A page of tasks: {items, total, page, page_size}; filters status/service/group (lists), batch_id, q."""
        params: dict[str, Any] = {"page": page, "page_size": page_size, "sort": sort}
        for key, value in filters.items():
            if value:
                params[key] = ",".join(value) if isinstance(value, list | tuple) else str(value)
        return await self.request("GET", "/api/v1/tasks", params=params)  # type: ignore[no-any-return]

    async def tasks(self, page: int = 1, page_size: int = 50, sort: str = "-created_at", **filters: Any) -> TaskPage:
        """A page of tasks as views (the filters of `list_tasks`)."""
        return TaskPage.from_json(await self.list_tasks(page, page_size, sort, **filters))

    async def get_task(self, task_id: uuid.UUID | str) -> dict[str, Any]:
        """One task with its attempt history."""
        return await self.request("GET", f"/api/v1/tasks/{task_id}")  # type: ignore[no-any-return]

    async def task(self, task_id: uuid.UUID | str) -> TaskView:
        """One task with its attempt history (and, while it runs, the GPUs it holds), as a view."""
        return TaskView.from_json(await self.get_task(task_id))

    async def timeline(self, task_id: uuid.UUID | str) -> dict[str, Any]:
        """What happened to a task, oldest first: {task_id, status, events: [{at, kind, text, ...}]}."""
        return await self.request("GET", f"/api/v1/tasks/{task_id}/timeline")  # type: ignore[no-any-return]

    async def logs(self, task_id: uuid.UUID | str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        """Log lines after line id `after`: {lines, next}."""
        return await self.request("GET", f"/api/v1/tasks/{task_id}/logs",  # type: ignore[no-any-return]
                                  params={"after": after, "limit": limit})

    async def act(self, action: str, ids: Sequence[uuid.UUID | str] | None = None,
                  filter: dict[str, Any] | None = None, all: bool = False) -> dict[str, Any]:
        """Bulk cancel / retry / requeue by ids or by filter: {changed, skipped, ids}."""
        body: dict[str, Any] = {"ids": _ids(ids)} if ids is not None else {"filter": filter or {}, "all": all}
        return await self.request("POST", f"/api/v1/tasks/bulk/{action}", json=body)  # type: ignore[no-any-return]

    async def act_on(self, action: str, task_id: uuid.UUID | str, attempt_id: str | None = None) -> TaskView:
        """Cancel / retry / requeue one task; with `attempt_id`, only while that attempt is its current one (409
        otherwise). Returns the task as changed."""
        method, path = SINGLE_ACTIONS[action]
        params = {"attempt_id": attempt_id} if attempt_id else {}
        return TaskView.from_json(await self.request(method, path.format(task_id), params=params))

    async def task_files(self, task_id: uuid.UUID | str) -> dict[str, Any]:
        """A task's inputs and each attempt's outputs: {inputs, attempts: [{number, outputs}]}, with URLs."""
        return await self.request("GET", f"/api/v1/tasks/{task_id}/files")  # type: ignore[no-any-return]

    async def task_stats(self) -> TaskCounts:
        """Tasks by status."""
        return TaskCounts.from_json(await self.request("GET", "/api/v1/tasks/stats"))

    # workers
    async def list_workers(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Every worker with its live state (optionally only those of a group, or in a status)."""
        params = {k: v for k, v in {"group": group, "status": status}.items() if v}
        return (await self.request("GET", "/api/v1/workers", params=params))["items"]  # type: ignore[no-any-return]

    async def workers(self, group: str | None = None, status: str | None = None) -> list[WorkerView]:
        """Every worker (filtered as `list_workers`), as views."""
        return [WorkerView.from_json(w) for w in await self.list_workers(group, status)]

    async def worker(self, worker_id: uuid.UUID | str) -> WorkerView:
        """One worker (or the one a unique id prefix names), fetched alone."""
        return WorkerView.from_json(await self.request("GET", f"/api/v1/workers/{worker_id}"))

    async def worker_stats(self) -> ClusterTotals:
        """Cluster totals: workers by status; cores, memory, GPUs and slots, used and in all."""
        return ClusterTotals.from_json(await self.request("GET", "/api/v1/workers/stats"))

    async def command(self, worker_id: uuid.UUID | str, command: CommandKind,
                      args: dict[str, Any] | None = None) -> int:
        """Send drain / resume / cancel-task / shutdown to one worker."""
        body = {"command": command, "args": args or {}}
        return (await self.request("POST", f"/api/v1/workers/{worker_id}/commands", json=body))["sent"]  # type: ignore[no-any-return]

    async def remove_worker(self, worker_id: uuid.UUID | str) -> dict[str, Any]:
        """Delete an offline worker (or the one a unique id prefix names) from the record."""
        return await self.request("POST", f"/api/v1/workers/{worker_id}/remove")  # type: ignore[no-any-return]

    # services
    async def list_services(self) -> list[dict[str, Any]]:
        """Every service with its pause, running limit and counts."""
        return (await self.request("GET", "/api/v1/services"))["items"]  # type: ignore[no-any-return]

    async def services(self) -> list[ServiceView]:
        """Every service (as `list_services`), as views."""
        return [ServiceView.from_json(s) for s in await self.list_services()]

    async def change_service(self, name: str, **change: Any) -> dict[str, Any]:
        """Pause or resume a service (`paused`), set its `max_running` (None: the configured limit) or
        `description`."""
        return await self.request("PUT", f"/api/v1/services/{name}", json=change)  # type: ignore[no-any-return]

    # stats
    async def queues(self) -> list[dict[str, Any]]:
        """Per-service queue figures."""
        return (await self.request("GET", "/api/v1/stats/queues"))["items"]  # type: ignore[no-any-return]

    async def batches(self, limit: int = 50) -> list[BatchView]:
        """Recent batches with progress, newest first."""
        answer = await self.request("GET", "/api/v1/batches", params={"limit": limit})
        return [BatchView.from_json(b) for b in answer["items"]]

    def results(self, batch_id: uuid.UUID | str, fmt: str = "jsonl") -> AsyncIterator[bytes]:
        """The batch's results table (jsonl or csv), streamed as it is read from the store."""
        return self.stream(f"/api/v1/batches/{batch_id}/results", {"format": fmt})

    async def dashboard(self) -> Dashboard:
        """Everything the Queues pane shows: tasks by status, per-service queues, cluster totals, retention."""
        return Dashboard.from_json(await self.request("GET", "/api/v1/stats/dashboard"))

    async def health(self) -> dict[str, Any]:
        """Whether the coordinator's stores answer."""
        return await self.request("GET", "/api/v1/health")  # type: ignore[no-any-return]
