"""The coordinators sharing one Redis prefix: the database its index belongs to, and their file store.

Several `aidd --serve` may serve one Redis and PostgreSQL (README "Several coordinators"). Two
mistakes would split such a deployment without a word: a coordinator on another database rebuilds
the shared index from its own record at start (wiping the others' queues), and coordinators with
files of their own accept inputs that the coordinator an agent asks later cannot find. So the prefix
records the database its index was built from, and every running coordinator keeps an entry saying
which file store it uses; a start that fits neither is refused before it touches the index, and
writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.config import Settings
from coordinator.errors import StoresMismatch
from coordinator.keys import Keys
from coordinator.queue import as_str
from coordinator.storage import NamedStore

log = logging.getLogger(__name__)
REFRESH_S = 5.0
"""Seconds between a running coordinator's refreshes of its entry in `{prefix}:coordinators`."""
STALE_S = 3 * REFRESH_S
"""An entry not refreshed for this long is a coordinator that died without leaving: ignored, then
dropped."""
IDENTITY = text("SELECT system_identifier, current_database() FROM pg_control_system()")
Name = bytes | str


async def database_identity(engine: AsyncEngine) -> str:
    """`system_identifier/name` of the database: the same through any URL, user or password, across
    restarts and a failover to a physical replica (which shares the identifier); different for
    another server or another database."""
    async with engine.connect() as conn:
        system, name = (await conn.execute(IDENTITY)).one()
    return f"{system}/{name}"


def _database_name(identity: str) -> str:
    system, _, name = identity.partition("/")
    return f"{name!r} on server {system}"


def redis_address(url: str) -> str:
    """A Redis URL without its credentials, to name it in a message."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Peers:
    """This coordinator's entry among those sharing its Redis prefix, refreshed while it runs."""

    def __init__(self, redis: Redis, settings: Settings, store: NamedStore) -> None:
        self.redis, self.store, self.keys = redis, store, Keys(settings.key_prefix)
        address = redis_address(settings.redis_url or "")
        self.where = f"Redis prefix {settings.key_prefix!r} at {address}"
        self.private_index = "redis" in settings.embedded
        """An embedded Redis is this coordinator's alone: its index follows whatever database this is
        (e.g. an embedded PostgreSQL created anew); there is nothing to refuse."""
        self.instance = uuid.uuid4().hex
        self.entry: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
                                      "api": f"{settings.host}:{settings.port}",
                                      "started": time.time()}
        self._refresh: asyncio.Task[None] | None = None

    async def check(self, database: str) -> None:
        """Refuse (StoresMismatch) what `join` would refuse, writing nothing: the early pass."""
        await self._settle(database, claim=False)

    async def join(self, database: str) -> None:
        """Bind the prefix's index to `database`, enter this coordinator, and keep its entry fresh
        until `leave`.

        Raises:
            StoresMismatch: the index belongs to another database, or a live coordinator uses another
                file store; nothing is written then.
        """
        file_store = await self._settle(database, claim=True)
        refresh = self._refresh_forever(database, file_store)
        self._refresh = asyncio.create_task(refresh, name="aidd-peers")

    async def leave(self) -> None:
        """Stop refreshing and remove this coordinator's entry (a dead one goes stale instead)."""
        if self._refresh is None:
            return
        self._refresh.cancel()
        await asyncio.gather(self._refresh, return_exceptions=True)
        self._refresh = None
        with contextlib.suppress(RedisError, OSError):
            await self.redis.hdel(self.keys.coordinators, self.instance)

    async def _settle(self, database: str, claim: bool) -> str:
        """Check both records and, with `claim`, write ours, in one transaction (WATCH: a concurrent
        change of either record makes it look again), so two coordinators starting together cannot
        both slip through.

        Returns:
            This coordinator's file store identity.
        """
        mine = await asyncio.to_thread(lambda: self.store.identity)  # a local store reads a file
        async with self.redis.pipeline() as pipe:
            while True:
                try:
                    await pipe.watch(self.keys.database, self.keys.coordinators)
                    bound = await pipe.get(self.keys.database)
                    entries = await pipe.hgetall(self.keys.coordinators)
                    now = time.time()
                    live, stale = self._sorted(entries, now)
                    self._refuse(database, None if bound is None else as_str(bound), mine, live)
                    if not claim:
                        return mine
                    pipe.multi()
                    pipe.set(self.keys.database, database)
                    pipe.hset(self.keys.coordinators, self.instance, self._entry(mine, now))
                    if stale:
                        pipe.hdel(self.keys.coordinators, *stale)
                    await pipe.execute()
                    return mine
                except WatchError:
                    continue

    @staticmethod
    def _sorted(entries: dict[Name, Name], now: float) -> tuple[list[dict[str, Any]], list[Name]]:
        """The live entries, and the fields of the stale (or unreadable) ones."""
        live: list[dict[str, Any]] = []
        stale: list[Name] = []
        for field, raw in entries.items():
            try:
                entry = orjson.loads(raw)
                fresh = now - float(entry["seen"]) < STALE_S
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                fresh = False
            if fresh:
                live.append(entry)
            else:
                stale.append(field)
        return live, stale

    def _refuse(self, database: str, bound: str | None, mine: str,
                live: list[dict[str, Any]]) -> None:
        """StoresMismatch when the index belongs to another database or a live entry names another
        file store."""
        if bound is not None and bound != database and not self.private_index:
            raise StoresMismatch(
                f"{self.where} is the index of another PostgreSQL database "
                f"({_database_name(bound)}; this one is {_database_name(database)}); use another "
                "key_prefix or the same database (after moving the database to a new server, "
                f"delete {self.keys.database})")
        other = next((entry for entry in live if entry.get("file_store") != mine), None)
        if other is not None:
            raise StoresMismatch(
                f"another coordinator ({other.get('host')}, pid {other.get('pid')}) serves "
                f"{self.where} with a different file store ({other.get('file_store')}; this one: "
                f"{mine}): several coordinators need MinIO/S3 or one shared files directory; "
                "see README 'Several coordinators'")

    def _entry(self, file_store: str, now: float) -> bytes:
        return orjson.dumps({**self.entry, "file_store": file_store, "seen": now})

    async def _refresh_forever(self, database: str, file_store: str) -> None:
        """Every REFRESH_S: our entry's `seen`, and the database binding again if a FLUSHALL took
        it."""
        failing = False
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(self.keys.coordinators, self.instance,
                              self._entry(file_store, time.time()))
                    pipe.set(self.keys.database, database, nx=True)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("cannot refresh this coordinator's entry in Redis: %s", exc)
                failing = True
            else:
                failing = False
