"""dramatiq on Redis: the broker and actors its workers load (`dramatiq bench.peers.dramatiq_peer`)."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.record import DoneCounter, Stamper

URL_ENV = "BENCH_DRAMATIQ_URL"
broker = RedisBroker(url=os.environ.get(URL_ENV, "redis://127.0.0.1:6379/3"))
dramatiq.set_broker(broker)
done = DoneCounter(URL_ENV)
stamper = Stamper(URL_ENV)


@dramatiq.actor(max_retries=0)
def noop(i: int) -> None:
    """The no-op task of the drain."""
    done.add()


@dramatiq.actor(max_retries=0)
def stamp(i: int) -> None:
    """The task of the latency run: records when it started."""
    stamper.push(i, time.time())
