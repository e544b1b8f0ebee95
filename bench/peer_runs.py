"""Submit, drain and latency runs of the peers, each on its own database of the same Redis server.

Every peer runs as its own real worker processes (started here, stopped by pid). The drain clock polls a
done-counter; the latency run sends one task at a time and reads the stamps the task pushed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import Child, DrainClock, SlowLog, latency_summary, python, python_env, spawn, wait_for
from bench.peers.record import DONE_KEY, STAMPS_KEY
from tests.support.ports import free_port

KEEPS = {
    "celery": "the message in a Redis list until a worker takes it (acked on receipt by default: a worker that "
              "dies loses the tasks it prefetched); no result or state (results ignored, no result backend)",
    "rq": "a job hash per task (function, args, status, timestamps) and the result for 500 s; "
          "started/finished registries; nothing on disk beyond Redis persistence",
    "dramatiq": "the message in Redis until acked after the run (redelivered if the worker dies); "
                "no result or state history",
    "ray": "the task in the memory of its owner (the driver that submitted it) and the raylets; results in the "
           "object store; nothing on disk: a driver that dies takes its queued tasks with it",
}


@dataclass
class Peer:
    """One peer system: how to submit, how its workers start, how to count what it finished."""

    name: str
    url: str
    url_env = ""

    def __post_init__(self) -> None:
        os.environ[self.url_env] = self.url  # the peer modules read it when first imported

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def submit(self, n: int) -> float:
        """Enqueue n no-op tasks; returns tasks/s."""
        raise NotImplementedError

    def send_stamp(self, i: int) -> None:
        """Enqueue one latency task."""
        raise NotImplementedError

    def workers(self, processes: int, log_dir: Path) -> list[Child]:
        raise NotImplementedError

    def start(self, log_dir: Path) -> None:
        """Start what the peer needs besides Redis and its workers (most need nothing)."""

    def stop(self) -> None:
        """Stop what `start` started."""

    def done(self, client: redis.Redis) -> int:
        raw = client.get(DONE_KEY)
        return int(raw) if raw else 0


class CeleryPeer(Peer):
    """Celery 5 with the Redis broker, prefork pool."""

    url_env = "BENCH_CELERY_URL"

    def submit(self, n: int) -> float:
        from celery import group

        from bench.peers import celery_peer
        celery_peer.app.conf.broker_url = self.url
        start = time.perf_counter()
        for base in range(0, n, 1000):
            group(celery_peer.noop.s(i) for i in range(base, min(base + 1000, n))).apply_async()
        return n / (time.perf_counter() - start)

    def send_stamp(self, i: int) -> None:
        from bench.peers import celery_peer
        celery_peer.app.conf.broker_url = self.url
        celery_peer.stamp.apply_async((i,))

    def workers(self, processes: int, log_dir: Path) -> list[Child]:
        argv = python("-m", "celery", "-A", "bench.peers.celery_peer", "worker", "-c", str(processes),
                      "-P", "prefork", "-Q", "bench", "--without-gossip", "--without-mingle", "--without-heartbeat",
                      "-l", "WARNING")
        return [spawn(f"celery-c{processes}", argv, python_env(**{self.url_env: self.url}), log_dir)]


class RqPeer(Peer):
    """RQ with its default worker (a forked work horse per job)."""

    url_env = "BENCH_RQ_URL"

    def submit(self, n: int) -> float:
        from rq import Queue

        from bench.peers import rq_peer
        client = self.client()
        queue = Queue(rq_peer.QUEUE, connection=client)
        start = time.perf_counter()
        for base in range(0, n, 1000):
            with client.pipeline() as pipe:
                queue.enqueue_many([Queue.prepare_data(rq_peer.noop, (i,))
                                    for i in range(base, min(base + 1000, n))], pipeline=pipe)
                pipe.execute()
        return n / (time.perf_counter() - start)

    def send_stamp(self, i: int) -> None:
        from rq import Queue

        from bench.peers import rq_peer
        Queue(rq_peer.QUEUE, connection=self.client()).enqueue(rq_peer.stamp, i)

    def workers(self, processes: int, log_dir: Path) -> list[Child]:
        return [spawn(f"rq-{k}", python("-m", "rq.cli", "worker", "-u", self.url, "-q", "bench"),
                      python_env(**{self.url_env: self.url}), log_dir) for k in range(processes)]

    def done(self, client: redis.Redis) -> int:
        return int(client.zcard("rq:finished:bench"))


class DramatiqPeer(Peer):
    """dramatiq 2 with the Redis broker (8 threads per process, its default)."""

    url_env = "BENCH_DRAMATIQ_URL"

    def submit(self, n: int) -> float:
        from bench.peers import dramatiq_peer
        start = time.perf_counter()
        for i in range(n):
            dramatiq_peer.noop.send(i)
        return n / (time.perf_counter() - start)

    def send_stamp(self, i: int) -> None:
        from bench.peers import dramatiq_peer
        dramatiq_peer.stamp.send(i)

    def workers(self, processes: int, log_dir: Path) -> list[Child]:
        argv = python("-m", "dramatiq", "bench.peers.dramatiq_peer", "--processes", str(processes),
                      "--threads", "8")
        return [spawn(f"dramatiq-p{processes}", argv, python_env(**{self.url_env: self.url}), log_dir)]


class RayPeer(Peer):
    """Ray on a local cluster started here: a head node without CPUs, so that submitted tasks wait as in a queue,
    and as the workers a node of `processes` CPUs (a worker process per CPU for one-CPU tasks). This process is
    the driver: it owns the tasks it submits. Redis only counts completions and takes the latency stamps."""

    url_env = "BENCH_RAY_URL"
    head: Child | None = None
    address = ""
    refs: list[Any]
    """The last tasks submitted: held, as a caller holds what it will read the results from."""

    def _ray(self, name: str, log_dir: Path, *args: str) -> Child:
        ray = str(Path(python()[0]).with_name("ray"))
        return spawn(name, [ray, "start", "--block", "--disable-usage-stats", "--object-store-memory", "100000000",
                            *args], python_env(**{self.url_env: self.url}), log_dir)

    def start(self, log_dir: Path) -> None:
        import ray

        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = self._ray("ray-head", log_dir, "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--num-cpus", "0", "--include-dashboard", "false",
                              "--temp-dir", str(log_dir.parent / "ray"))
        wait_for(lambda: _listening(port), 120, "the Ray head node", children=[self.head])
        ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)

    def stop(self) -> None:
        import ray

        ray.shutdown()
        if self.head is not None:
            self.head.stop()

    def submit(self, n: int) -> float:
        from bench.peers import ray_peer
        start = time.perf_counter()
        self.refs = [ray_peer.noop.remote(i) for i in range(n)]
        return n / (time.perf_counter() - start)

    def send_stamp(self, i: int) -> None:
        from bench.peers import ray_peer
        self.refs = [ray_peer.stamp.remote(i)]

    def workers(self, processes: int, log_dir: Path) -> list[Child]:
        return [self._ray(f"ray-node-{processes}", log_dir, "--address", self.address, "--node-ip-address",
                          "127.0.0.1", "--num-cpus", str(processes))]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def drain(peer: Peer, n: int, processes: int, log_dir: Path, timeout: float,
          slow: SlowLog | None = None) -> dict[str, Any]:
    """Fill the queue with n tasks (the submit figure), start the workers, time them until all are done; with
    `slow`, the longest Redis command of the submit and of the drain too."""
    client = peer.client()
    client.flushdb()
    if slow:
        slow.take()
    submit_rate = peer.submit(n)
    slowest = {"submit": slow.take()} if slow else {}
    children = peer.workers(processes, log_dir)
    try:
        rate = DrainClock(lambda: peer.done(client), n).run(timeout, children)
        if slow:
            slowest["drain"] = slow.take()
    finally:
        for child in children:
            child.stop()
    return {"submit_tasks_per_s": submit_rate, "drain_tasks_per_s": rate, "processes": processes,
            "slowest_redis_command": slowest}


def latency(peer: Peer, n: int, processes: int, log_dir: Path, warmup: int = 20) -> dict[str, Any]:
    """Submit one task at a time on idle workers: submit -> start and submit -> end (stamped by the task)."""
    client = peer.client()
    client.flushdb()
    children = peer.workers(processes, log_dir)
    starts: list[float] = []
    ends: list[float] = []
    try:
        for i in range(warmup + n):
            sent = time.time()
            peer.send_stamp(i)
            item = _pop(client, 60 if i == 0 else 10, children)
            _, started, ended = json.loads(item)
            if i >= warmup:
                starts.append(started - sent)
                ends.append(ended - sent)
            time.sleep(0.002)
    finally:
        for child in children:
            child.stop()
    return {"start": latency_summary(starts), "finish": latency_summary(ends)}


def _pop(client: redis.Redis, timeout: float, children: list[Child]) -> bytes:
    item: list[Any] = []

    def popped() -> bool:
        got = client.blpop([STAMPS_KEY], timeout=1)
        if got:
            item.append(got[1])
        return bool(got)
    wait_for(popped, timeout, "a latency task to finish", interval=0, children=children)
    return bytes(item[0])


PEERS: dict[str, Callable[[str], Peer]] = {
    "celery": lambda url: CeleryPeer("celery", url),
    "rq": lambda url: RqPeer("rq", url),
    "dramatiq": lambda url: DramatiqPeer("dramatiq", url),
    "ray": lambda url: RayPeer("ray", url),
}
