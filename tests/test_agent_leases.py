"""The agent keeps its cores busy: leases that went out of date while tasks ended are answered at once.

An agent with more slots than cores asks for tasks with what its cores have free; when the few it got
end, the lease it is already waiting on still says "no CPU free". The coordinator answers such a lease
as soon as one of that worker's tasks ends, so the agent asks again at once instead of after the poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.server import BackgroundServer
from tests.agent_helpers import AgentProcess
from tests.support.agent import HttpAgent
from tests.support.api import Api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
POLL = 30.0
"""A long poll: with out-of-date leases left waiting, the tasks below would take about this long each."""


@pytest.fixture
def live(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[BackgroundServer]:
    server = BackgroundServer(settings.model_copy(update={"port": 0, "heartbeat_timeout": 10.0,
                                                          "lease_max_wait": POLL}), timers=True).start()
    yield server
    server.stop()


def test_cpu_bound_tasks_follow_each_other_without_waiting_out_the_poll(live: BackgroundServer,
                                                                        tmp_path: Path) -> None:
    cores = psutil.cpu_count() or 1
    with httpx.Client(base_url=live.url, timeout=30) as http:
        api = Api(http)
        agent = AgentProcess(live.url, tmp_path, "busy-node", "--slots", str(cores + 4), "--heartbeat-interval", "5")
        try:
            wait_until(lambda: api.worker("busy-node"), 20, "the agent to register")
            time.sleep(1.0)  # its first lease is waiting (nothing queued yet)
            started = time.monotonic()
            # Each task takes every core: one runs at a time, the agent's other slots stay empty.
            ids = [api.submit("noop", resources={"cpu": cores}) for _ in range(4)]
            for task_id in ids:
                api.wait_status(task_id, "succeeded", timeout=3 * POLL)
            assert time.monotonic() - started < POLL / 2
        finally:
            agent.stop()


def test_a_stopping_server_answers_the_waiting_leases_at_once(live: BackgroundServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A lease long-polling an empty queue is answered (empty) when the coordinator shuts down, instead of
    holding the graceful shutdown for its whole timeout and being cancelled with an error in the log."""
    with httpx.Client(base_url=live.url, timeout=POLL + 10) as http:
        agent = HttpAgent.register(http)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(agent.lease, 1, wait_s=POLL)
            time.sleep(1.0)  # the lease is waiting on the empty queue
            assert not waiting.done()
            started = time.monotonic()
            live.stop()
            assert waiting.result(timeout=10) == []
            assert time.monotonic() - started < 3.0  # uvicorn's graceful timeout is 5 s
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
