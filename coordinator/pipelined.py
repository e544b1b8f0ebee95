"""A small Lua script called thousands of times a second, on one pipelined connection of its own.

Every agent's heartbeat is one call of the `heartbeat` script. Through redis-py's pool a call costs the coordinator
~70 µs of CPU besides the round trip itself (the pool's checkout and return, the retry wrapper, a stream reader
and a task woken a reply): a third of a heartbeat's whole cost in the coordinator (bench/RESULTS.md). Here each
call is written at once on one connection and the replies, which Redis sends in order, are read by hiredis in the
protocol's callback and handed to their callers: no pool, no lock, nothing woken but the caller.

redis-py still opens the connection, so TLS, AUTH, SELECT and Unix sockets are as the URL says; the script then
takes the socket over. The batched scripts (claims, outcomes, submissions) stay on the pool: a call there carries
tens of tasks, so redis-py's cost is spread thin (all of them moved here made no difference to a drain; measured in
bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

REPLY_TIMEOUT_S = 10.0
"""The oldest unanswered call's limit, as the pool's `socket_timeout`: past it the connection is dropped."""


class _Replies(asyncio.Protocol):
    """One taken-over connection: its calls waiting for replies, oldest first."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer  # kept: a stream writer closes its transport when it is collected
        self.transport = writer.transport
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"Redis sent what is not RESP: {exc}"))
                return
            if reply is False:
                return
            _, future = self.waiting.popleft()
            if future.done():  # its caller was cancelled; the reply is dropped, the order kept
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(NoScriptError(str(reply)) if str(reply).startswith("NOSCRIPT") else reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(RedisConnectionError(f"the connection to Redis was lost ({exc or 'closed'})"))

    def abort(self, error: Exception) -> None:
        """Fail every waiting call with `error` and close: the next call opens a new connection."""
        self.lost = True
        self.transport.close()
        while self.waiting:
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class PipelinedScript:
    """A Lua script run by EVALSHA on a connection of its own (loaded again after NOSCRIPT), calls pipelined."""

    def __init__(self, redis: Redis, source: str, reply_timeout: float = REPLY_TIMEOUT_S) -> None:
        self.redis, self.source, self.reply_timeout = redis, source, reply_timeout
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # as redis-py's Script names it
        self._replies: _Replies | None = None
        self._connecting = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, args: list[Any]) -> Any:
        """The script's reply to ARGV `args` (no KEYS); a RedisError as redis-py would raise it."""
        try:
            return await self._send(b"EVALSHA", self.sha, 0, *args)
        except NoScriptError:  # a restarted or flushed Redis
            await self._send(b"SCRIPT", b"LOAD", self.source)
            return await self._send(b"EVALSHA", self.sha, 0, *args)

    async def _send(self, *command: Any) -> Any:
        replies = self._replies if self._replies is not None and not self._replies.lost else await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        replies.waiting.append((loop.time() + self.reply_timeout, future))
        replies.transport.write(hiredis.pack_command(command))
        if self._timer is None:
            self._timer = loop.call_later(self.reply_timeout, self._check_oldest)
        return await future

    async def _connect(self) -> _Replies:
        """A new connection, opened by redis-py as its pool would open one, then taken from it."""
        async with self._connecting:
            if self._replies is not None and not self._replies.lost:  # another caller opened it meanwhile
                return self._replies
            connection = self.redis.connection_pool.make_connection()
            await connection.connect()
            writer = connection._writer  # redis-py has no public accessor
            assert writer is not None, "redis-py connected without a stream"
            connection._reader = connection._writer = None  # it no longer owns the socket: never closes it
            replies = _Replies(writer)
            writer.transport.set_protocol(replies)
            self._replies = replies
            return replies

    def _check_oldest(self) -> None:
        """Drop the connection when its oldest call is overdue (a hung Redis or a cut link); else look again
        when it falls due. One timer a connection, not one a call."""
        self._timer = None
        replies = self._replies
        if replies is None or replies.lost or not replies.waiting:
            return
        loop = asyncio.get_running_loop()
        due = replies.waiting[0][0]
        if due <= loop.time():
            replies.abort(RedisTimeoutError(f"Redis did not answer in {self.reply_timeout:g}s"))
        else:
            self._timer = loop.call_at(due, self._check_oldest)

    def close(self) -> None:
        """Close the connection (calls still waiting fail); a later call would open a new one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._replies is not None:
            self._replies.abort(RedisConnectionError("the script's connection was closed"))
            self._replies = None
