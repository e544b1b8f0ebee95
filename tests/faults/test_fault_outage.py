"""Running work outlives the coordinator: restarts, long outages and failover restart no task; a real
partition is still safe (one outcome each, and no overlap at all for exclusive tasks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import httpx
import pytest

from tests.faults.cluster import FAST, Cluster, Stopwatch
from tests.faults.link import Link
from tests.faults.processes import Coordinator
from tests.faults.test_fault_agents import offline, rerun_elsewhere, running_on
from tests.faults.truth import Figures, Submitter, read_records, system_view
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
TIMEOUT = float(FAST["AIDD_HEARTBEAT_TIMEOUT"])


def first_attempts_only(system: Cluster, ids: list[str]) -> bool:
    """Whether every one of these tasks ran (and ended) on its first attempt."""
    tasks, _ = system_view(system.conninfo, ids)
    return all(t["attempts"] == 1 for t in tasks.values())


def restarted(system: Cluster, ids: list[str]) -> list[str]:
    """The tasks an attempt of which ended for any reason but `requeued` before another began.

    Under load a coordinator killed -9 may die between committing a lease and sending its reply: the agent never
    gets those tasks, and its next heartbeat has them requeued (`requeued`, never run: `duplicate_executions`
    counts any second run). Any other earlier end (a worker loss, a stale attempt) is a running task restarted.
    """
    tasks, attempts = system_view(system.conninfo, ids)
    return sorted({a["task_id"] for a in attempts
                   if a["number"] < tasks[a["task_id"]]["attempts"] and a["end_reason"] != "requeued"})


def leads(coordinator: Coordinator) -> bool:
    """Whether this coordinator says it runs the timers now."""
    try:
        return bool(httpx.get(f"{coordinator.url}/api/v1/health", timeout=2).json().get("leader"))
    except (httpx.HTTPError, ValueError):
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_coordinator_down_for_three_heartbeat_timeouts(cluster: Callable[..., Cluster],
                                                       record: Callable[[Figures], None], how: str) -> None:
    """The only coordinator stops (gracefully, or killed) for three heartbeat timeouts while three agents run long
    tasks, then starts again: no task is stopped or run twice; those that finished during the outage deliver their
    results afterwards, the others go on; every task succeeds on its first attempt."""
    system = cluster()
    coordinator = system.coordinator()
    for name in ("n0", "n1", "n2"):
        system.agent(name, 4, wait=False)
    for name in ("n0", "n1", "n2"):
        system.worker_id(name)
    ids = system.submit([system.task(seconds) for seconds in (8, 30) for _ in range(6)])
    wait_until(lambda: system.running_now() == 12, 30, "twelve tasks to run")
    coordinator.stop() if how == "SIGTERM" else coordinator.kill()
    clock = Stopwatch()
    time.sleep(3 * TIMEOUT)
    during = system.running_now()
    coordinator.start()
    coordinator.wait_ready()
    outage = clock.elapsed()
    system.settle(90)
    figures = system.figures(f"coordinator {how}, down {3 * TIMEOUT:g} s", outage, None,
                             note=f"down {outage:.1f}s ({outage / TIMEOUT:.1f} heartbeat timeouts); "
                                  f"{during} of 12 tasks still running at its end")
    record(figures)
    assert during >= 6  # the long ones at least (the short ones may have finished meanwhile)
    assert figures.outcomes == {"succeeded": 12} and figures.duplicate_executions == 0
    assert first_attempts_only(system, ids)


def test_rolling_restart_of_two_coordinators(cluster: Callable[..., Cluster],
                                             record: Callable[[Figures], None]) -> None:
    """Two coordinators, agents that know both: each is restarted in turn under load (the leader gracefully, then
    the new leader killed -9). Agents move to the one that answers; the leadership moves within a lease; no task
    is restarted or run twice."""
    system = cluster()
    first, second = system.coordinator("a"), system.coordinator("b")
    both = f"{first.url},{second.url}"
    for name in ("n0", "n1", "n2"):
        system.agent(name, 6, url=both, wait=False)
    for name in ("n0", "n1", "n2"):
        system.worker_id(name)
    system.submit([system.task(seconds) for seconds in (4, 12) for _ in range(12)])
    wait_until(lambda: system.running_now() >= 18, 30, "the load to run")
    submitter = Submitter(system.ledger, system.api(second), lambda: system.task(3), per_batch=3, period=0.5)
    submitter.start()
    try:
        handovers = [restart(system, first, second, submitter, kill=False),
                     restart(system, second, first, submitter, kill=True)]
    finally:
        submitter.finish()
    system.settle(90)
    figures = system.figures("rolling restart of two coordinators", None, None, note="; ".join(handovers))
    record(figures)
    assert figures.duplicate_executions == 0
    assert restarted(system, system.ledger.ids()) == []


def restart(system: Cluster, victim: Coordinator, survivor: Coordinator, submitter: Submitter, kill: bool) -> str:
    """Stop (or kill) `victim`, time until `survivor` leads, start `victim` again; says how long the handover took."""
    wait_until(lambda: leads(victim) or leads(survivor), 30, "a leader")
    was_leader = leads(victim)
    clock = Stopwatch()
    victim.kill() if kill else victim.stop()
    took = clock.until(partial(leads, survivor), 30, "the survivor to lead")
    submitter.api = system.api(survivor)
    time.sleep(2.0)
    victim.start()
    victim.wait_ready()
    return f"{'kill -9' if kill else 'SIGTERM'} of the {'leader' if was_leader else 'other'}: {took:.1f}s to a leader"


@pytest.mark.parametrize("exclusive", [False, True], ids=["plain", "exclusive"])
def test_agent_cut_off_while_the_coordinator_leads(cluster: Callable[..., Cluster],
                                                   record: Callable[[Figures], None], exclusive: bool) -> None:
    """A partition: agent `a` reaches the coordinator through a link that goes silent (no answers either way) while
    the coordinator stays up. After the heartbeat timeout `a` is offline and its tasks run on `b`. Plain tasks went
    on running on `a` meanwhile and are killed as soon as the link is back; exclusive ones were stopped by `a`
    before the coordinator gave them away, so they never overlap. One accepted outcome each either way."""
    system = cluster()
    coordinator = system.coordinator()
    link = Link(coordinator.port).start()
    try:
        system.agent("a", 4, url=f"http://127.0.0.1:{link.port}")
        ids = system.submit([system.task(15, exclusive=exclusive) for _ in range(4)])
        wait_until(lambda: len(running_on(system, "a")) == 4, 30, "four tasks to run on a")
        old = {ex.attempt for ex in running_on(system, "a")}
        system.agent("b", 4)
        api = system.api()
        link.cut(silent=True)
        clock = Stopwatch()
        seen = clock.times({"detect": lambda: offline(api, "a"),
                            "recover": lambda: rerun_elsewhere(system, set(ids), "a")}, 40)
        time.sleep(2.0)
        link.mend()
        mended = time.time()
        wait_until(lambda: all(read_records(system.records)[a].last < time.time() - 1 for a in old), 20,
             "a's old attempts to stop")
        system.settle(60)
    finally:
        link.stop()
    lived = max(read_records(system.records)[a].last for a in old) - mended
    figures = system.figures(f"agent cut off, {'exclusive' if exclusive else 'plain'} tasks", seen["detect"],
                             seen["recover"], note=f"old attempts' last sign of life {lived:+.2f}s after the link "
                                                   "came back")
    record(figures)
    assert figures.outcomes == {"succeeded": 4}
    if exclusive:
        assert figures.overlap_s == 0 and lived < 0
    else:
        assert lived < 3.0  # killed within a heartbeat (plus the kill grace) of hearing from the coordinator again
