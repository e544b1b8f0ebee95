"""What a peer's task does besides nothing: count itself done, or stamp when it started and ended.

Counting is in memory; a background thread per process adds the count to a Redis key every 2 ms, so a
no-op task costs no extra round trip (the drain clock polls that key). Stamps are pushed to a Redis
list after the task's own timing is taken (latency runs, one task at a time).
"""

from __future__ import annotations

import json
import os
import threading
import time

import redis

DONE_KEY = "bench:done"
STAMPS_KEY = "bench:stamps"


class DoneCounter:
    """Completions of this process, flushed to `DONE_KEY` in the background (restarted after a fork)."""

    def __init__(self, url_env: str) -> None:
        self.url_env = url_env
        self._pid = -1
        self._count = 0
        self._guard = threading.Lock()

    def add(self) -> None:
        """One more task done."""
        if self._pid != os.getpid():
            self._start()
        with self._guard:
            self._count += 1

    def _start(self) -> None:
        with self._guard:
            if self._pid == os.getpid():
                return
            self._pid, self._count = os.getpid(), 0
            client = redis.Redis.from_url(os.environ[self.url_env])
            threading.Thread(target=self._flush, args=(client,), name="bench-done", daemon=True).start()

    def _flush(self, client: redis.Redis) -> None:
        sent = 0
        while True:
            time.sleep(0.002)
            count = self._count
            if count != sent:
                client.incrby(DONE_KEY, count - sent)
                sent = count


class Stamper:
    """Pushes `[i, started, ended]` (epoch seconds) for latency runs."""

    def __init__(self, url_env: str) -> None:
        self.url_env = url_env
        self._clients: dict[int, redis.Redis] = {}

    def push(self, i: int, started: float) -> None:
        ended = time.time()
        client = self._clients.get(os.getpid())
        if client is None:
            client = self._clients[os.getpid()] = redis.Redis.from_url(os.environ[self.url_env])
        client.rpush(STAMPS_KEY, json.dumps([i, started, ended]))
