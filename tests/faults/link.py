"""A loopback TCP relay that can be cut and mended: one process's path to a store or a coordinator, alone.

`cut()` closes every relayed connection and refuses new ones (they are accepted and closed at once), which
is what a process sees when its path to a server is gone while everyone else's still works; `cut(silent=True)`
is a partition as a network makes it: nothing more gets through either way and nothing is closed, so the
two ends see only timeouts. `mend()` relays again. Bytes are passed through untouched, so it serves
PostgreSQL, Redis and HTTP alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self


class LoopServer:
    """A loopback TCP server on an event loop of its own thread, in front of 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int, name: str) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then the loop and its thread."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            serving = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Link(LoopServer):
    """Relays 127.0.0.1:`port` to 127.0.0.1:`upstream_port` until cut."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port, "link")
        self._cut = False
        self._silent = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._held: list[asyncio.StreamWriter] = []

    def cut(self, silent: bool = False) -> None:
        """Relay nothing more: drop every connection and refuse new ones, or (`silent`) hold them all unanswered."""
        async def drop() -> None:
            self._cut, self._silent = True, silent
            for writer in list(self._writers):
                if silent:
                    self._held.append(writer)  # kept open, never written to again
                    self._writers.discard(writer)
                else:
                    writer.close()
        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(10)

    def mend(self) -> None:
        """Relay new connections again (those held by a silent cut are closed: their peers time out anyway)."""
        async def heal() -> None:
            self._cut = False
            for writer in self._held:
                writer.close()
            self._held.clear()
        asyncio.run_coroutine_threadsafe(heal(), self._loop).result(10)

    def stop(self) -> None:
        """Close every connection (those a silent cut holds too), the listener, the loop and its thread."""
        self.mend()
        self.cut()
        super().stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            if self._silent:
                self._held.append(writer)
            else:
                writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
            for end in (writer, up_writer):
                if end not in self._held:
                    end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                if writer not in self._writers:  # cut meanwhile: what was on its way is lost
                    return
                writer.write(chunk)
                await writer.drain()
        if writer in self._writers:
            writer.close()
