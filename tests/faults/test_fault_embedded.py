"""`aidd --serve` on its embedded stores with tasks in flight: kill -9 of its redis-server, then of its postgres.
aidd restarts each itself (same socket, same port, same data); health comes back to 200 without restarting aidd,
and every acknowledged task finishes once."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.faults.cluster import FAST, Stopwatch
from tests.faults.processes import Agent, Coordinator
from tests.faults.truth import Figures, Ledger, Submitter, measure, recorded_task, unfinished
from tests.support.api import Api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
TASKS = 40
SLOTS = 8
DURATIONS = (0.5, 1.0, 2.0)
"""Seconds the tasks run."""


class Aidd:
    """One `aidd --serve` on embedded stores (no store URLs; its state dir outside pytest's temp root, as root's
    PostgreSQL runs as another user that must reach it) and one agent."""

    def __init__(self, work: Path) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="aidd-faults-"))
        self.coordinator = Coordinator("coordinator", work, {"AIDD_STATE_DIR": str(self.state), **FAST})
        self.agent = Agent("n0", work, self.coordinator.url, "--slots", str(SLOTS))

    @property
    def conninfo(self) -> str:
        """The embedded PostgreSQL, at the port kept in the state directory."""
        port = (self.state / "postgres.port").read_text().strip()
        return f"host=127.0.0.1 port={port} user=postgres dbname=aidd connect_timeout=2"

    def server_pid(self, name: str) -> int | None:
        """The pid of the coordinator's live `redis-server` or `postgres` child, found as an operator would."""
        for child in psutil.Process(self.coordinator.pid).children():
            with contextlib.suppress(psutil.Error):
                if child.name() == name and child.status() != psutil.STATUS_ZOMBIE:
                    return child.pid
        return None

    def succeeded(self) -> int:
        """How many tasks PostgreSQL holds as succeeded (raises while it is down)."""
        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM tasks WHERE status = 'succeeded'").fetchone()
        return int(row[0]) if row else 0

    def kill_server(self, name: str, label: str) -> dict[str, float]:
        """kill -9 one embedded server; seconds until aidd logged its death (`detect`), until a new one runs and
        health is 200 again (`healthy`), and until tasks succeed again (`recover`)."""
        killed, before = self.server_pid(name), self.succeeded()
        assert killed is not None, f"no {name} child of the coordinator"
        psutil.Process(killed).kill()

        def restarted() -> bool:
            return self.server_pid(name) not in (None, killed)
        return Stopwatch().times({
            "detect": lambda: f"embedded {label} died" in self.coordinator.output,
            "healthy": lambda: restarted() and self.coordinator.health() == 200,
            "recover": lambda: restarted() and self.succeeded() > before,
        }, 60)

    def close(self) -> None:
        self.agent.kill()
        self.coordinator.stop(timeout=10)
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def aidd(tmp_path: Path) -> Iterator[Aidd]:
    system = Aidd(tmp_path)
    yield system
    system.close()
    print(f"--- coordinator ---\n{system.coordinator.output[-4000:]}\n--- agent ---\n{system.agent.output[-2000:]}")


def test_embedded_stores_killed_are_restarted(aidd: Aidd, tmp_path: Path,
                                              record: Callable[[Figures], None]) -> None:
    """kill -9 of the embedded redis-server, then of postgres, while tasks run and more arrive: the same aidd
    process restarts each, its pools reconnect by themselves, no acknowledged task is lost, and a later
    deliberate stop exits 0 without a restart."""
    started = time.monotonic()
    records = tmp_path / "records"
    records.mkdir()
    durations = itertools.cycle(DURATIONS)
    aidd.coordinator.start()
    aidd.coordinator.wait_ready(90)
    api, ledger = Api.connect(aidd.coordinator.url), Ledger()
    aidd.agent.start()
    wait_until(lambda: (w := api.worker("n0")) and w["status"] == "online", 30, "the agent to register")
    ledger.submit(api, [recorded_task(records, next(durations)) for _ in range(TASKS)])
    wait_until(aidd.succeeded, 60, "a first task to succeed")
    submitter = Submitter(ledger, api, lambda: recorded_task(records, next(durations)), per_batch=4, period=1.0)
    submitter.start()
    try:
        faults = {"Redis": aidd.kill_server("redis-server", "Redis"),
                  "PostgreSQL": aidd.kill_server("postgres", "PostgreSQL")}
        time.sleep(2.0)  # submissions go on a while after the recovery
    finally:
        submitter.finish()
    with contextlib.suppress(AssertionError):  # what has not finished by then counts as lost in the figures
        wait_until(lambda: not unfinished(aidd.conninfo, ledger.ids()), 120, "every task to finish", 0.5)
    healthy = ", ".join(f"{server} {seen['healthy']:.2f} s" for server, seen in faults.items())
    figures = measure("embedded Redis, PostgreSQL kill -9", aidd.conninfo, ledger, records,
                      api.counters().get("refused", 0), max(seen["detect"] for seen in faults.values()),
                      max(seen["recover"] for seen in faults.values()), time.monotonic() - started,
                      note=f"healthy again after {healthy}; {ledger.refused} submissions refused meanwhile")
    api.close()
    record(figures)
    assert figures.overlap_s == 0
    aidd.agent.kill()
    assert aidd.coordinator.stop() == 0  # the same process all along, and it stops cleanly
    assert aidd.coordinator.output.count(" died (") == 2  # the deliberate stop restarted nothing
