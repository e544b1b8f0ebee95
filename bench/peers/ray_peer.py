"""Ray remote functions (the workers of the local cluster import this module by name when they first run one).

The plain functions stay module attributes, so Ray pickles them by reference: each worker process then uses
its own counter and stamper instead of receiving the driver's copy (which holds a lock and cannot be pickled).
"""

from __future__ import annotations

import time

import ray

from bench.peers.record import DoneCounter, Stamper

URL_ENV = "BENCH_RAY_URL"
done = DoneCounter(URL_ENV)
stamper = Stamper(URL_ENV)


def count_done(i: int) -> None:
    """The no-op task of the drain."""
    done.add()


def push_stamp(i: int) -> None:
    """The task of the latency run: records when it started."""
    stamper.push(i, time.time())


noop = ray.remote(max_retries=0)(count_done)
stamp = ray.remote(max_retries=0)(push_stamp)
