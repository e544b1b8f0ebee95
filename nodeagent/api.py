"""The coordinator's worker API over HTTP, with its failures sorted into what the agent does about them.

`Unreachable` (connection errors, timeouts, 5xx): wait and retry. `WorkerUnknown` (401/404 on a worker
route): the coordinator forgot this worker, register again. `Refused` (other 4xx): the request itself
is wrong; retrying it as is cannot help.

An agent may know several coordinators (they share one Redis and PostgreSQL, so a worker id and token
made by one work on every other): a call that finds its coordinator unreachable goes to the next one at
once, and the agent stays with the one that answered.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from aiddwire import Heartbeat
from nodeagent import __version__, fastjson


class Unreachable(Exception):
    """The coordinator did not answer (or answered 5xx); worth retrying."""


class WorkerUnknown(Exception):
    """The coordinator does not know this worker or its token (401/404): register again."""


class Refused(Exception):
    """A 4xx other than 401/404/409: the request is wrong as it stands."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@functools.lru_cache(maxsize=64)
def _parsed(url: str) -> httpx.URL:
    """The URL of a route, parsed once: httpx parses a URL string in Python on every request (about 25 µs), and the
    agent calls the same few routes a few hundred times a second while it drains a queue."""
    return httpx.URL(url)


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:300]
    except ValueError:
        return response.text[:300]


class CoordinatorApi:
    """The worker routes of the coordinators at `urls` (one, or several sharing their stores); after `register`,
    calls carry this worker's own token."""

    def __init__(self, urls: str | Sequence[str], agent_token: str | None, timeout: float = 10.0) -> None:
        self.urls = [u.rstrip("/") for u in ([urls] if isinstance(urls, str) else urls)]
        self._current = 0
        self.agent_token = agent_token
        self.worker_id: str | None = None
        self.worker_token: str | None = None
        self.timeout = timeout
        self.http = httpx.AsyncClient(timeout=timeout, headers={"user-agent": f"aidd-agent/{__version__}"})

    @property
    def url(self) -> str:
        """The coordinator this agent talks to now."""
        return self.urls[self._current]

    async def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                    token: str | None = None, accept: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One request, to each known coordinator in turn until one answers (the first unreachable one is
        left for the next); raises Unreachable when none does."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        content = None
        if body is not None:
            content = fastjson.dumps(body)
            headers["content-type"] = "application/json"
        problems: list[str] = []
        for _ in self.urls:
            url = self.url
            try:
                response = await self.http.request(method, _parsed(url + path), content=content, headers=headers,
                                                   timeout=timeout or self.timeout)
            except httpx.HTTPError as exc:
                problems.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            else:
                if response.status_code < 500:
                    return self._answer(response, path, accept)
                problems.append(f"HTTP {response.status_code}: {_error_text(response)}")
            self._move_on(url)
        raise Unreachable(problems[0] if len(problems) == 1 else
                          "; ".join(f"{u}: {p}" for u, p in zip(self.urls, problems, strict=False)))

    def _move_on(self, url: str) -> None:
        """`url` did not answer: the next call starts with the next coordinator (unless another call moved on)."""
        if self.url == url and len(self.urls) > 1:
            self._current = (self._current + 1) % len(self.urls)

    def _answer(self, response: httpx.Response, path: str, accept: tuple[int, ...]) -> tuple[int, Any]:
        status = response.status_code
        if status < 300 or status in accept:
            try:
                return status, fastjson.loads(response.content) if response.content else None
            except ValueError:
                raise Unreachable(f"HTTP {status}: not JSON") from None
        if status in (401, 404) and self.worker_id and path.startswith("/api/v1/workers/" + self.worker_id):
            raise WorkerUnknown(_error_text(response))
        raise Refused(status, _error_text(response))

    def _absolute(self, url: str) -> str:
        """A URL the coordinator gave as a path (its own routes) on the coordinator talked to now."""
        return self.url + url if url.startswith("/") else url

    def _worker(self, suffix: str = "") -> str:
        if self.worker_id is None:
            raise WorkerUnknown("not registered")
        return f"/api/v1/workers/{self.worker_id}{suffix}"

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """Enroll this host; keeps the worker id and token for the later calls."""
        _, answer = await self._call("POST", "/api/v1/workers/register", body, token=self.agent_token)
        self.worker_id, self.worker_token = str(answer["id"]), str(answer["token"])
        return dict(answer)

    async def heartbeat(self, body: Heartbeat, timeout: float) -> dict[str, Any]:
        """Telemetry; the answer has `status`, `commands` and `stale_tasks`."""
        _, answer = await self._call("POST", self._worker("/heartbeat"), body, timeout, self.worker_token)
        return dict(answer)

    async def lease(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Long-poll for tasks (the HTTP timeout leaves room for the coordinator's wait)."""
        _, answer = await self._call("POST", self._worker("/lease"), body, float(body.get("wait_s", 0)) + 15,
                                     self.worker_token)
        return list(answer.get("tasks", []))

    async def report(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send events; returns the per-event results (status 200 or 409)."""
        _, answer = await self._call("POST", self._worker("/reports"), {"events": events}, 30.0, self.worker_token,
                                     accept=(409,))
        return list((answer or {}).get("results", []))

    async def ack(self, ids: list[int]) -> None:
        """Acknowledge commands carried out."""
        await self._call("DELETE", self._worker("/commands"), {"ids": ids}, token=self.worker_token)

    async def attempt_files(self, attempt_id: str) -> dict[str, Any]:
        """Input download URLs, output globs and the upload URL of a running attempt (409 when stale)."""
        _, answer = await self._call("GET", self._worker(f"/attempts/{attempt_id}/files"), token=self.worker_token)
        return dict(answer)

    async def download(self, url: str, dest: Path) -> int:
        """Stream a presigned URL to `dest` (no Authorization header: S3 refuses a second credential)."""
        try:
            async with self.http.stream("GET", self._absolute(url), timeout=max(self.timeout, 60.0)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    if response.status_code >= 500:
                        raise Unreachable(f"HTTP {response.status_code}")
                    raise Refused(response.status_code, _error_text(response))
                size = 0
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
                return size
        except httpx.HTTPError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None

    async def upload(self, url: str, source: Path) -> dict[str, Any]:
        """PUT one output file, streamed, with this worker's token."""
        size = source.stat().st_size

        async def chunks() -> AsyncIterator[bytes]:
            with source.open("rb") as data:
                while chunk := data.read(1 << 20):
                    yield chunk
        headers = {"authorization": f"Bearer {self.worker_token}", "content-length": str(size),
                   "content-type": "application/octet-stream"}
        try:
            response = await self.http.put(self._absolute(url), content=chunks(), headers=headers,
                                           timeout=max(self.timeout, 300.0))
        except httpx.HTTPError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise Unreachable(f"HTTP {response.status_code}: {_error_text(response)}")
        if response.status_code >= 400:
            raise Refused(response.status_code, _error_text(response))
        return dict(response.json())

    async def deregister(self) -> None:
        """Graceful stop: offline; tasks still held go back to the queue."""
        await self._call("DELETE", self._worker(), token=self.worker_token)

    async def close(self) -> None:
        await self.http.aclose()
