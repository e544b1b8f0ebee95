"""One scenario's system: coordinator and agent processes on a fresh database and Redis prefix, plus its truth."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from tests.faults.processes import Agent, Coordinator, Stores
from tests.faults.truth import Figures, Ledger, measure, read_records, recorded_task, unfinished
from tests.support.api import Api
from tests.support.waiting import wait_until

FAST: dict[str, str] = {
    "AIDD_HEARTBEAT_INTERVAL": "0.5", "AIDD_HEARTBEAT_TIMEOUT": "4", "AIDD_HEARTBEAT_CHECK_INTERVAL": "0.2",
    "AIDD_RETRY_BASE_DELAY": "0.2", "AIDD_RETRY_MAX_DELAY": "2", "AIDD_LEASE_MAX_WAIT": "2",
    "AIDD_RECONCILE_INTERVAL": "5", "AIDD_MAX_PENDING_PER_SERVICE": "100000",
}
"""Test timers: heartbeats every 0.5 s, a worker silent for 4 s is lost, drift repaired every 5 s."""
BATCH = 500


class Stopwatch:
    """Seconds since a fault was injected, and the time until a probe first holds."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def until(self, probe: Callable[[], Any], timeout: float, what: str) -> float:
        """Poll `probe` until it is truthy (errors count as not yet); seconds since the fault."""
        return self.times({what: probe}, timeout)[what]

    def times(self, probes: dict[str, Callable[[], Any]], timeout: float, interval: float = 0.05) -> dict[str, float]:
        """Poll several probes side by side; for each, the seconds since the fault when it first held."""
        seen: dict[str, float] = {}

        def check() -> bool:
            for name, probe in probes.items():
                if name not in seen and _holds(probe):
                    seen[name] = self.elapsed()
            return len(seen) == len(probes)
        try:
            wait_until(check, timeout, "", interval)
        except AssertionError:
            missing = ", ".join(name for name in probes if name not in seen)
            raise AssertionError(f"timed out after {timeout:g}s waiting for {missing}") from None
        return seen


def _holds(probe: Callable[[], Any]) -> bool:
    """Whether a probe holds; an unreachable coordinator or store means not yet."""
    try:
        return bool(probe())
    except (httpx.HTTPError, psycopg.Error, OSError):
        return False


class Cluster:
    """Coordinators and agents of one scenario; everything they started is stopped by pid in `close`."""

    def __init__(self, stores: Stores, work: Path, **settings: str) -> None:
        token = uuid.uuid4().hex[:10]
        self.stores, self.work, self.database = stores, work, f"f{token}"
        self.settings = {"AIDD_REDIS_URL": stores.redis_url, "AIDD_DATABASE_URL": stores.database(self.database),
                         "AIDD_KEY_PREFIX": f"f{token}", "AIDD_STATE_DIR": str(work / "state"), **FAST, **settings}
        self.records = work / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.coordinators: list[Coordinator] = []
        self.agents: list[Agent] = []
        self.ledger = Ledger()
        self.key: str | None = None
        """The API key the suite's clients use (a coordinator with keys)."""
        self._apis: list[Api] = []
        self.t0 = time.monotonic()

    @property
    def conninfo(self) -> str:
        return self.stores.conninfo(self.database)

    # -- processes --------------------------------------------------------------------------------

    def coordinator(self, name: str = "coordinator", **settings: str) -> Coordinator:
        """Start a coordinator process and wait until it is healthy."""
        proc = Coordinator(name, self.work, {**self.settings, **settings})
        self.coordinators.append(proc)
        proc.start()
        return proc.wait_ready()

    def api(self, coordinator: Coordinator | None = None, key: str | None = None) -> Api:
        api = Api.connect((coordinator or self.coordinators[0]).url, key or self.key)
        self._apis.append(api)
        return api

    def agent(self, name: str, slots: int = 4, *args: str, coordinator: Coordinator | None = None,
              url: str | None = None, env: dict[str, str] | None = None, wait: bool = True) -> Agent:
        """Start an agent (on the first coordinator unless told otherwise) and wait until it is online."""
        agent = Agent(name, self.work, url or (coordinator or self.coordinators[0]).url, "--slots", str(slots),
                      *args, env=env)
        self.agents.append(agent)
        agent.start()
        if wait:
            self.worker_id(name, coordinator)
        return agent

    def worker_id(self, hostname: str, coordinator: Coordinator | None = None, timeout: float = 30.0) -> str:
        """The id of the online worker registered as `hostname` (waits for it)."""
        api = self.api(coordinator)
        worker = wait_until(lambda: (w := api.worker(hostname)) and w["status"] == "online" and w, timeout,
                      f"agent {hostname} to register")
        return str(worker["id"])

    # -- work -------------------------------------------------------------------------------------

    def task(self, seconds: float, child: bool = False, loud: bool = False, **fields: Any) -> dict[str, Any]:
        """A recorded shell task that works for `seconds`."""
        return recorded_task(self.records, seconds, child, loud, **fields)

    def submit(self, bodies: Sequence[dict[str, Any]], api: Api | None = None) -> list[str]:
        """Submit tasks in batches of 500, each acknowledged one into the ledger."""
        api = api or self.api()
        return [i for start in range(0, len(bodies), BATCH)
                for i in self.ledger.submit(api, list(bodies[start:start + BATCH]))]

    def count(self, status: str) -> int:
        """How many tasks PostgreSQL holds in `status` (raises while it is down)."""
        with psycopg.connect(self.conninfo, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM tasks WHERE status = %s", (status,)).fetchone()
        return int(row[0]) if row else 0

    def running_now(self) -> int:
        """Attempts running now as their own records tell (started, not ended, seen within a second)."""
        now = time.time()
        return sum(1 for ex in read_records(self.records).values() if not ex.ended and now - ex.last < 1.0)

    def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) until PostgreSQL holds every acknowledged task as finished; what is not by then
        counts as lost in the figures."""
        deadline = time.monotonic() + timeout
        while unfinished(self.conninfo, self.ledger.ids()) and time.monotonic() < deadline:
            time.sleep(0.5)

    def figures(self, scenario: str, detect_s: float | None = None, recover_s: float | None = None,
                note: str = "", records: bool = True) -> Figures:
        """This scenario's figures (stale reports refused: the coordinators' shared counter, once agents have
        stopped sending late reports)."""
        wall = time.monotonic() - self.t0
        return measure(scenario, self.conninfo, self.ledger, self.records if records else None, self.refused(),
                       detect_s, recover_s, wall, note)

    def await_refused(self, at_least: int, timeout: float = 30.0) -> int:
        """Wait until the coordinators have refused `at_least` late reports (agents retry with a backoff)."""
        api = self.api()
        return int(wait_until(lambda: (n := api.counters().get("refused", 0)) >= at_least and n, timeout,
                        f"{at_least} late reports to be refused"))

    def refused(self, quiet: float = 1.5, timeout: float = 20.0) -> int:
        """The coordinators' count of refused reports once it has not changed for `quiet` seconds (agents retry
        late reports with a backoff)."""
        live = [c for c in self.coordinators if c.running()]
        if not live:
            return 0
        api = self.api(live[0])
        count, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = api.counters().get("refused", 0)
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.25)
        return count

    # -- teardown ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every agent (SIGKILL), coordinator (SIGTERM) and leftover task process, by pid."""
        for api in self._apis:
            api.close()
        for agent in self.agents:
            agent.signal(signal.SIGCONT)
            agent.kill()
        for coordinator in self.coordinators:
            coordinator.stop(timeout=10)
        self.kill_leftovers()

    def leftovers(self) -> list[psutil.Process]:
        """Task processes of this scenario still running (they name its records directory)."""
        mark = str(self.records)
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error):
                if mark in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    def kill_leftovers(self) -> None:
        for proc in self.leftovers():
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def logs(self) -> str:
        """The tail of every process's log (printed with a failing test)."""
        return "\n".join(f"--- {p.name} ---\n{p.output[-4000:]}" for p in [*self.coordinators, *self.agents])
