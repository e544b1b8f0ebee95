"""Celery on Redis: the app its workers load (`celery -A bench.peers.celery_peer worker`), results ignored."""

from __future__ import annotations

import os
import time

from celery import Celery

from bench.peers.record import DoneCounter, Stamper

URL_ENV = "BENCH_CELERY_URL"
QUEUE = "bench"

app = Celery("bench", broker=os.environ.get(URL_ENV, "redis://127.0.0.1:6379/1"))
app.conf.update(task_ignore_result=True, task_default_queue=QUEUE, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)
done = DoneCounter(URL_ENV)
stamper = Stamper(URL_ENV)


@app.task(name="bench.noop")
def noop(i: int) -> None:
    """The no-op task of the drain."""
    done.add()


@app.task(name="bench.stamp")
def stamp(i: int) -> None:
    """The task of the latency run: records when it started."""
    stamper.push(i, time.time())
