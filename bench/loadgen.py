"""An open-loop HTTP load generator on plain asyncio streams (HTTP/1.1, keep-alive, JSON bodies).

Requests are scheduled at a fixed rate whatever the answers do, and each latency is measured from the
moment the request was due (so a server that falls behind shows it, instead of slowing the generator
down). A general client such as httpx costs ~0.1-0.3 ms of CPU per request on this kind of machine, as
much as the handler under test; this one costs a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.harness import latency_summary

TRACE: list[tuple[float, float]] | None = None
Request = tuple[str, bytes, Sequence[tuple[str, str]]]
"""(path, JSON body, extra headers) of one POST."""


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> int:
        """POST and read the whole answer; returns its status (0 when the connection failed).

        A kept-alive connection the server has closed meanwhile is replaced and the request sent again once.
        """
        reused = self.writer is not None
        status = await self._post(path, body, headers)
        if status == 0 and reused:
            status = await self._post(path, body, headers)
        return status

    async def connect(self) -> bool:
        """Open the connection (if it is not); whether it is open."""
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return False
        return True

    async def _post(self, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        if not await self.connect():
            return 0
        assert self.reader is not None and self.writer is not None
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers), "", ""]
        try:
            self.writer.write("\r\n".join(head).encode() + body)
            status_line = await self.reader.readline()
            status = int(status_line.split()[1])
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await self.reader.readexactly(length)
            return status
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            self.close()
            return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class StepResult:
    """What one rate step gave."""

    target_rate: float
    achieved_rate: float
    sent: int
    errors: int
    statuses: dict[int, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)


class Pool:
    """Connections kept open across steps, as agents keep theirs."""

    def __init__(self, host: str, port: int, size: int = 256) -> None:
        self.connections = [Connection(host, port) for _ in range(size)]

    async def open(self) -> None:
        await asyncio.gather(*(c.connect() for c in self.connections))

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


async def run_step(pool: Pool, make: Callable[[int], Request], rate: float, seconds: float,
                   in_flight: int | None = None) -> StepResult:
    """Send `rate` requests/s for `seconds` (request i is `make(i)`) over the pool's connections."""
    jobs: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connections = pool.connections[:in_flight]

    async def consume(conn: Connection) -> None:
        while (job := await jobs.get()) is not None:
            due, i = job
            path, body, headers = make(i)
            status = await conn.post(path, body, headers)
            latencies.append(time.perf_counter() - due)
            if TRACE is not None:
                TRACE.append((due - start, latencies[-1]))
            statuses[status] = statuses.get(status, 0) + 1

    await pool.open()  # as agents do, connections are open before the clock runs
    consumers = [asyncio.create_task(consume(c)) for c in connections]
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait((due, i))
    for _ in connections:
        jobs.put_nowait(None)
    await asyncio.gather(*consumers)
    elapsed = time.perf_counter() - start
    errors = sum(n for status, n in statuses.items() if status != 200)
    return StepResult(rate, total / elapsed, total, errors, statuses, latency_summary(latencies))
