"""`PipelinedScript`: many calls on one connection, each answered with its own reply; a lost, hung or flushed Redis
fails only the calls it must and the next call goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator.config import Settings
from coordinator.pipelined import PipelinedScript

ECHO = "if ARGV[1] == 'boom' then return redis.error_reply('boom asked') end return ARGV[1]"
SPIN = """local t = redis.call('TIME') local start = t[1] * 1000000 + t[2]
while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] - start > tonumber(ARGV[1]) then break end end
return 'spun'"""

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Redis]:
    redis = Redis.from_url(settings.redis_url or "")
    yield redis
    await redis.aclose()


async def test_many_calls_each_get_their_own_reply(client: Redis) -> None:
    """Calls in flight together are answered in order: an error reply and a cancelled caller shift no other's."""
    echo = PipelinedScript(client, ECHO)
    try:
        assert await echo(["first"]) == b"first"  # connected: the calls below are written in their first step
        calls = [asyncio.ensure_future(echo([f"call {i}" if i != 250 else "boom"])) for i in range(500)]
        await asyncio.sleep(0)  # every call written, none answered yet
        calls[100].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[100], asyncio.CancelledError)
        assert isinstance(done[250], ResponseError) and "boom asked" in str(done[250])
        assert [d for i, d in enumerate(done) if i not in (100, 250)] == [
            f"call {i}".encode() for i in range(500) if i not in (100, 250)]
        with pytest.raises(ResponseError, match="boom asked"):  # raised, not returned
            await echo(["boom"])
        assert await echo(["after"]) == b"after"
    finally:
        echo.close()


async def test_a_flushed_script_is_loaded_again(client: Redis, redis: SyncRedis) -> None:
    echo = PipelinedScript(client, ECHO)
    try:
        assert await echo(["one"]) == b"one"
        redis.script_flush()
        assert await echo(["two"]) == b"two"
    finally:
        echo.close()


async def test_a_killed_connection_is_opened_again(client: Redis, redis: SyncRedis) -> None:
    """Redis closing an idle connection (a restart, `CLIENT KILL`) costs the next call a new connection, no error.
    (A call written as the connection dies fails with a ConnectionError, as calls do while Redis is away.)"""
    echo = PipelinedScript(client, ECHO)
    try:
        before = {c["id"] for c in redis.client_list()}
        assert await echo(["one"]) == b"one"
        ours = {c["id"] for c in redis.client_list()} - before
        assert len(ours) == 1, ours
        assert redis.client_kill_filter(_id=ours.pop()) == 1
        await asyncio.sleep(0.2)  # the closed connection read: idle between two beats
        assert await echo(["two"]) == b"two"
    finally:
        echo.close()


async def test_an_overdue_reply_fails_the_calls_waiting(client: Redis) -> None:
    """A Redis that does not answer within the limit (hung, or a cut link) fails the calls waiting on it at the
    limit, not at the reply; the next call opens a new connection."""
    spin = PipelinedScript(client, SPIN, reply_timeout=0.2)
    try:
        started = time.monotonic()
        first, behind = await asyncio.gather(spin(["800000"]), spin(["0"]), return_exceptions=True)
        waited = time.monotonic() - started
        assert isinstance(first, RedisTimeoutError) and isinstance(behind, RedisTimeoutError), (first, behind)
        assert 0.2 <= waited < 0.7, waited
        await asyncio.sleep(0.7)  # the spin over
        assert await spin(["0"]) == b"spun"
    finally:
        spin.close()


async def test_closing_fails_the_calls_waiting(client: Redis) -> None:
    spin = PipelinedScript(client, SPIN)
    waiting = asyncio.ensure_future(spin(["300000"]))
    await asyncio.sleep(0.05)
    spin.close()
    with pytest.raises(RedisConnectionError):
        await waiting
    await asyncio.sleep(0.3)
    try:
        assert await spin(["0"]) == b"spun"  # a later call opens a new connection
    finally:
        spin.close()
