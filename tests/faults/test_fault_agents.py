"""Agents that die, leave processes behind, freeze, or are killed by their own task: nothing lost, none twice."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.faults.cluster import Cluster, Stopwatch
from tests.faults.processes import Agent, alive
from tests.faults.truth import Execution, Figures, read_records
from tests.support.api import Api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def running_on(cluster: Cluster, host: str) -> list[Execution]:
    """Attempts on `host` that recorded a start and no end yet."""
    return [ex for ex in read_records(cluster.records).values() if ex.host == host and not ex.ended]


def rerun_elsewhere(cluster: Cluster, tasks: set[str], host: str) -> bool:
    """Whether every one of `tasks` has started again on a host other than `host`."""
    elsewhere = {ex.task for ex in read_records(cluster.records).values() if ex.host != host}
    return tasks <= elsewhere


def offline(api: Api, hostname: str) -> bool:
    worker = api.worker(hostname)
    return worker is not None and worker["status"] == "offline"


@dataclass(frozen=True)
class Killed:
    """What killing an agent mid-task showed: the tasks it ran, and seconds from the kill until their
    processes were all gone, until the coordinator declared it lost, and until they all ran elsewhere."""

    tasks: set[str]
    gone_s: float
    detect_s: float
    recover_s: float


def kill_mid_task(cluster: Cluster, seconds: float, child: bool) -> Killed:
    """Agent `a` runs four tasks of `seconds`, `b` four others; `a` is killed -9 mid-task."""
    cluster.coordinator()
    cluster.agent("a", slots=4)
    cluster.submit([cluster.task(seconds, child=child) for _ in range(4)])
    victims = wait_until(lambda: (r := running_on(cluster, "a")) and len(r) == 4 and r, 30, "four tasks to run on a")
    cluster.agent("b", slots=8)
    cluster.submit([cluster.task(seconds, child=child) for _ in range(4)])
    time.sleep(0.5)  # a's tasks under way (their helpers started)
    victims = [ex for ex in read_records(cluster.records).values() if ex.host == "a"]
    cluster.agents[0].kill()
    clock, api, tasks = Stopwatch(), cluster.api(), {ex.task for ex in victims}
    seen = clock.times({"gone": lambda: not any(alive(pid) for ex in victims for pid in ex.pids),
                        "detect": lambda: offline(api, "a"),
                        "recover": lambda: rerun_elsewhere(cluster, tasks, "a")}, 40)
    return Killed(tasks, seen["gone"], seen["detect"], seen["recover"])


def test_agent_killed_mid_task(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """kill -9 of an agent: its tasks die with it (parent-death signal), are requeued once the coordinator
    misses its heartbeats, and run to one outcome elsewhere; the two attempts never overlap."""
    system = cluster()
    killed = kill_mid_task(system, 3, child=False)
    system.settle(60)
    figures = system.figures("agent kill -9 mid-task", killed.detect_s, killed.recover_s)
    record(figures)
    assert killed.gone_s < killed.detect_s
    assert figures.overlap_s == 0
    assert figures.duplicate_executions == len(killed.tasks)  # each lost attempt ran again, once
    assert system.leftovers() == []


def test_agent_killed_while_its_task_children_live_on(cluster: Callable[..., Cluster],
                                                      record: Callable[[Figures], None]) -> None:
    """kill -9 of an agent whose tasks' work is done by grandchildren (which no parent-death signal reaches):
    they die too, before the coordinator gives the tasks to another host."""
    system = cluster()
    killed = kill_mid_task(system, 8, child=True)
    system.settle(60)
    figures = system.figures("agent kill -9, task children live on", killed.detect_s, killed.recover_s,
                             note=f"helpers gone {killed.gone_s:.2f}s after the kill")
    record(figures)
    assert killed.gone_s < killed.detect_s, "the helpers outlived the coordinator's decision to requeue"
    assert figures.overlap_s == 0


def test_agent_stopped_longer_than_the_heartbeat_timeout(cluster: Callable[..., Cluster],
                                                          record: Callable[[Figures], None]) -> None:
    """SIGSTOP an agent running exclusive tasks past the heartbeat timeout, then SIGCONT. A frozen agent cannot
    stop its tasks, so its keeper does, before the coordinator requeues them; they run again elsewhere, and once
    the agent wakes up its late reports (two tasks finished while it was frozen) are refused, and the keeper's
    kills are hand-backs, not failures of the tasks."""
    system = cluster()
    system.coordinator()
    frozen = system.agent("a", slots=4)
    short = system.submit([system.task(1.5, loud=True, exclusive=True) for _ in range(2)])
    long = system.submit([system.task(8, loud=True, exclusive=True) for _ in range(2)])
    wait_until(lambda: len(running_on(system, "a")) == 4, 30, "four tasks to run on a")
    old = [ex for ex in read_records(system.records).values() if ex.host == "a" and ex.task in long]
    frozen.signal(signal.SIGSTOP)
    clock = Stopwatch()
    system.agent("b", slots=4)
    api = system.api()
    seen = clock.times({"gone": lambda: not any(alive(pid) for ex in old for pid in ex.pids),
                        "detect": lambda: offline(api, "a"),
                        "recover": lambda: rerun_elsewhere(system, set(short + long), "a")}, 40)
    time.sleep(1.0)  # frozen a while longer
    frozen.signal(signal.SIGCONT)
    system.settle(60)
    system.await_refused(2)  # at least the two short tasks' successes, reported late
    figures = system.figures("agent SIGSTOP past timeout, exclusive", seen["detect"], seen["recover"],
                             note=f"its processes killed by its keeper {seen['gone']:.2f}s after SIGSTOP")
    record(figures)
    assert seen["gone"] < seen["detect"], "the frozen agent's tasks outlived the coordinator's decision to requeue"
    assert figures.overlap_s == 0 and figures.outcomes == {"succeeded": 4}
    after = read_records(system.records)
    assert not any(after[ex.attempt].ended for ex in old)  # killed, not finished
    assert figures.stale_refused >= 2
    assert frozen.running()
    wait_until(lambda: "killed by the agent's task keeper" in frozen.output, 10, "the agent to say its keeper killed")


def test_agent_stopped_past_the_timeout_with_plain_tasks(cluster: Callable[..., Cluster],
                                                         record: Callable[[Figures], None]) -> None:
    """SIGSTOP an agent running tasks that are not exclusive past the heartbeat timeout: they go on (a frozen
    agent looks like a partition), the coordinator gives them to another host, and once the agent wakes up it
    learns they are no longer its own and kills them within a heartbeat. One outcome each."""
    system = cluster()
    system.coordinator()
    frozen = system.agent("a", slots=4)
    ids = system.submit([system.task(12) for _ in range(3)])
    wait_until(lambda: len(running_on(system, "a")) == 3, 30, "three tasks to run on a")
    old = {ex.attempt for ex in running_on(system, "a")}
    frozen.signal(signal.SIGSTOP)
    clock = Stopwatch()
    system.agent("b", slots=4)
    api = system.api()
    seen = clock.times({"detect": lambda: offline(api, "a"),
                        "recover": lambda: rerun_elsewhere(system, set(ids), "a")}, 40)
    frozen.signal(signal.SIGCONT)
    woke = time.time()
    wait_until(lambda: all(read_records(system.records)[a].last < time.time() - 1 for a in old), 20,
         "a's old attempts to stop")
    system.settle(60)
    lived = max(read_records(system.records)[a].last for a in old) - woke
    figures = system.figures("agent SIGSTOP past timeout, plain", seen["detect"], seen["recover"],
                             note=f"old attempts' last sign of life {lived:.2f}s after SIGCONT")
    record(figures)
    assert figures.outcomes == {"succeeded": 3}
    assert lived < 3.0


@contextlib.contextmanager
def supervised(agent: Agent, restarts: list[float]) -> Iterator[None]:
    """Restart `agent` whenever it exits (a service manager's Restart=always), recording when."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if not agent.running():
                restarts.append(time.monotonic())
                agent.start()
    watcher = threading.Thread(target=watch, name="supervisor", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(5)


def test_poison_task_that_kills_its_agent(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """A task that kills its agent every time is failed after max_worker_losses (3), with the reason; the other
    tasks, on another agent, are not disturbed."""
    system = cluster(AIDD_MAX_WORKER_LOSSES="3")
    system.coordinator()
    victim = system.agent("p", 2, "--service", "poison")
    system.agent("b", 2, "--service", "faults")
    [poison] = system.submit([{"service": "poison", "task_type": "shell", "name": "kills its agent",
                               "input_params": {"argv": ["sh", "-c", "kill -9 $PPID; sleep 5"]}}])
    system.submit([system.task(1) for _ in range(6)])
    clock = Stopwatch()
    restarts: list[float] = []
    api = system.api()
    with supervised(victim, restarts):
        detect = clock.until(lambda: api.task(poison)["worker_losses"] >= 1, 60, "the first worker loss")
        recover = clock.until(lambda: api.task(poison)["status"] == "failed", 90, "the poison task to be failed")
    system.settle(60)
    failed = api.task(poison)
    figures = system.figures("poison task kills its agent", detect, recover,
                             note=f"failed after {failed['attempts']} attempts, {len(restarts)} agent restarts")
    record(figures)
    assert failed["worker_losses"] == 3 and "worker lost 3 times" in failed["error"]
    assert [a["end_reason"] for a in failed["attempt_history"]] == ["worker_lost"] * 3
    assert figures.outcomes == {"failed": 1, "succeeded": 6}
