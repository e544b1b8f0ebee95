"""Wakes long-polling leases when work arrives, in this process at once and (through Redis pub/sub) in the others;
the same channel tells the other coordinators that a worker's token changed."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis

from coordinator.metrics import Metrics
from coordinator.outages import OUTAGES, log_bug

log = logging.getLogger(__name__)


class Waker:
    """An event that fires on every message of the wakeup channel; `w:<worker id>` wakes that worker's lease only,
    `t:<worker id>` says that worker's token changed (`on_token_change`), and this process's own `wake_all` messages
    are not taken twice."""

    def __init__(self, redis: Redis, channel: str, metrics: Metrics) -> None:
        self.redis, self.channel, self.metrics = redis, channel, metrics
        self.origin = b"o:" + secrets.token_hex(8).encode()
        """What this process's `wake_all` sends: its own leases were woken already when the message comes back."""
        self._event = asyncio.Event()
        self._workers: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        """Set when the server shuts down: waits return at once, so long-polling leases answer (empty) instead
        of holding the graceful shutdown until uvicorn cancels them."""
        self.on_token_change: Callable[[str | None], None] = lambda worker: None
        """Called with a worker id when another coordinator changed or removed its token, and with None when the
        channel was (re)subscribed: changes announced meanwhile were missed (see `WorkerService.verify_token`)."""

    def start(self) -> None:
        """Begin listening (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="aidd-waker")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def close(self) -> None:
        """End every wait, now and later (the server is shutting down)."""
        self.closed = True
        self.fire()

    def fire(self) -> None:
        """Wake every waiter, then arm a fresh event for the next ones."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wake_all(self) -> None:
        """Wake the leases of every coordinator process: this one's now, the others' through the channel.

        Waking here first, not at the message's return from Redis, takes that round trip and whatever the
        event loop does meanwhile off a submitted task's way to its lease (0.4-0.6 ms of ~9, issue 17).
        """
        self.fire()
        await self.redis.publish(self.channel, self.origin)

    async def tokens_changed(self, workers: Iterable[str]) -> None:
        """Tell every coordinator process that these workers' tokens changed (taken back, enrolled again, removed)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker in workers:
                pipe.publish(self.channel, b"t:" + worker.encode())
            await pipe.execute()

    async def wake_worker(self, worker: str) -> None:
        """Wake one worker's lease, in whichever coordinator process holds it (its own tasks ended)."""
        await self.redis.publish(self.channel, b"w:" + worker.encode())

    def fire_worker(self, worker: str) -> None:
        """Wake the lease of one worker (its own tasks ended: what it asked for is out of date)."""
        event = self._workers.pop(worker, None)
        if event is not None:
            event.set()

    async def wait(self, timeout: float, worker: str | None = None) -> bool:
        """Return when woken or after `timeout` seconds; True when woken for `worker` in particular."""
        if self.closed:
            return False
        waits = [asyncio.ensure_future(self._event.wait())]
        mine = None
        if worker is not None:
            mine = self._workers.setdefault(worker, asyncio.Event())
            waits.append(asyncio.ensure_future(mine.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            if worker is not None and self._workers.get(worker) is mine:
                del self._workers[worker]
        return mine is not None and mine.is_set()

    async def _listen(self) -> None:
        while True:
            started = time.monotonic()
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.on_token_change(None)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            data = message["data"]
                            if isinstance(data, bytes) and data.startswith(b"w:"):
                                self.fire_worker(data[2:].decode())
                            elif isinstance(data, bytes) and data.startswith(b"t:"):
                                self.on_token_change(data[2:].decode())
                            elif data != self.origin:
                                self.fire()
            except asyncio.CancelledError:
                raise
            except OUTAGES as exc:  # Redis gone: leases fall back to their timeout; retry
                log.warning("wakeup channel lost (%s); resubscribing", exc)
            except Exception:
                log_bug(log, self.metrics, "wakeup")
            self.fire()
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
