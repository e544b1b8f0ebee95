"""A loopback HTTP/1.1 proxy in front of a coordinator that loses chosen responses.

The request reaches the coordinator (which acts on it); the response is read and thrown away, and the
client's connection is closed without an answer — what a network that fails after the fact looks like.
Only what the suite's clients send is understood: requests and responses with a Content-Length.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.faults.link import LoopServer

Rule = Callable[[bytes, bytes], bool]
"""Whether to lose the response, given the request (head and body) and the response (head and body)."""


@dataclass
class Drop:
    """A rule and how many more responses it may still lose."""

    rule: Rule
    left: int
    lost: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(request, response) of each exchange whose response was lost."""


async def _read_message(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP message (head and Content-Length body), or None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    try:
        return head + (await reader.readexactly(length) if length else b"")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


class LossyProxy(LoopServer):
    """Forwards 127.0.0.1:`port` to the coordinator's port; `lose(rule, times)` arms a rule."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port, "lossy-proxy")
        self.drops: list[Drop] = []
        self._lock = threading.Lock()

    def lose(self, rule: Rule, times: int = 1) -> Drop:
        """Lose the next `times` responses whose exchange matches `rule`."""
        drop = Drop(rule, times)
        with self._lock:
            self.drops.append(drop)
        return drop

    def _should_lose(self, request: bytes, response: bytes) -> bool:
        with self._lock:
            for drop in self.drops:
                if drop.left > 0 and drop.rule(request, response):
                    drop.left -= 1
                    drop.lost.append((request, response))
                    return True
        return False

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while (request := await _read_message(client_reader)) is not None:
                upstream_writer.write(request)
                await upstream_writer.drain()
                response = await _read_message(upstream_reader)
                if response is None or self._should_lose(request, response):
                    break
                client_writer.write(response)
                await client_writer.drain()
        except (ConnectionError, asyncio.CancelledError):  # a client gone, or the proxy stopping: end quietly
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
