"""RQ job functions (`rq worker` imports them by name); RQ keeps each job's hash and its finished registry."""

from __future__ import annotations

import time

from bench.peers.record import Stamper

URL_ENV = "BENCH_RQ_URL"
QUEUE = "bench"
stamper = Stamper(URL_ENV)


def noop(i: int) -> None:
    """The no-op job of the drain (completions are counted by RQ's own finished-job registry)."""


def stamp(i: int) -> None:
    """The job of the latency run: records when it started."""
    stamper.push(i, time.time())
