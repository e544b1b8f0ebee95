"""Defects a chaos campaign found, each a scenario that failed before its fix: work stuck, run twice at once,
failed through no fault of its own, or an API answer that broke (timers: heartbeat 0.5 s, timeout 4 s)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.faults.cluster import Cluster, Stopwatch
from tests.faults.link import Link
from tests.faults.processes import alive
from tests.faults.test_fault_agents import offline, running_on
from tests.faults.truth import Figures, read_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def overlap_of(figures: Figures) -> float:
    return figures.overlap_s or 0.0


def ignoring_sigterm(system: Cluster, seconds: float, **fields: object) -> dict[str, object]:
    """A recorded task (`seconds` of work) whose process ignores SIGTERM: it dies only of SIGKILL."""
    recorder = " ".join(system.task(seconds)["input_params"]["argv"][3:])
    return {**system.task(seconds), **fields,
            "input_params": {"argv": ["sh", "-c", f"trap '' TERM; exec {sys.executable} -S -I {recorder}"]}}


def attempt_history(system: Cluster, task_id: str) -> list[dict[str, object]]:
    return list(system.api().task(task_id)["attempt_history"])


# -- 1: a leader that lost PostgreSQL ------------------------------------------------------------------------


def test_leader_that_lost_postgres_hands_over(cluster: Callable[..., Cluster],
                                              record: Callable[[Figures], None]) -> None:
    """Two coordinators; the leader's path to PostgreSQL is cut and an agent of the other one is killed. The leader
    gives the lease up in the tick that fails, the healthy one leads, declares the dead agent lost after the
    takeover grace, and its tasks run on a healthy agent; the cut-off leader's lease attempts strand nothing."""
    system = cluster()
    link = Link(system.stores.pg_port).start()
    try:
        cut_off = system.settings["AIDD_DATABASE_URL"].replace(f":{system.stores.pg_port}/", f":{link.port}/")
        leader = system.coordinator("a", AIDD_DATABASE_URL=cut_off)
        wait_until(lambda: httpx.get(f"{leader.url}/api/v1/health").json()["leader"], 20, "a to lead")
        healthy = system.coordinator("b")
        victim = system.agent("v", 4, "--group", "v", coordinator=healthy)
        system.agent("s", 4, url=leader.url)  # leases through the cut-off leader, as agents behind a balancer do
        ids = system.submit([system.task(30, group="v") for _ in range(4)], api=system.api(healthy))
        wait_until(lambda: len(running_on(system, "v")) == 4, 30, "four tasks to run on v")
        link.cut()
        victim.kill()
        clock = Stopwatch()
        api = system.api(healthy)
        system.agent("h", 12, "--group", "v", "--group", "default", coordinator=healthy)
        seen = clock.times({"handed over": lambda: httpx.get(f"{healthy.url}/api/v1/health").json()["leader"],
                            "detect": lambda: offline(api, "v"),
                            "recover": lambda: all(api.task(i)["attempts"] >= 2 for i in ids)}, 60)
        more = system.submit([system.task(0.5) for _ in range(6)], api=api)
        wait_until(lambda: all(api.task(i)["status"] == "succeeded" for i in more), 30, "new work to run meanwhile")
        link.mend()
        system.settle(90)
        leader.stop()  # before its path to PostgreSQL goes for good
    finally:
        link.stop()
    figures = system.figures("leader lost PostgreSQL", seen["detect"], seen["recover"],
                             note=f"lease handed over after {seen['handed over']:.2f}s")
    record(figures)
    assert figures.outcomes == {"succeeded": 10}
    assert seen["handed over"] < 5.0


# -- 2: a broken host ------------------------------------------------------------------------------------------


def test_broken_work_dir_hands_tasks_back(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """One healthy agent and one whose work dir becomes unusable mid-run (the directory is replaced by a file):
    the broken agent hands the tasks it cannot start back without using a retry, stops leasing and says why (the
    API shows its problem) until the directory is usable again; no task fails."""
    system = cluster()
    system.coordinator()
    broken = system.agent("broken", 4)
    work = system.work / "broken-tasks"
    system.submit([system.task(1, max_retries=1) for _ in range(8)])
    wait_until(lambda: len(running_on(system, "broken")) >= 1, 30, "broken to run a task")
    shutil.move(work, system.work / "broken-tasks.moved")
    work.write_text("not a directory")
    system.agent("healthy", 4)
    clock = Stopwatch()
    ids = system.submit([system.task(1, max_retries=1) for _ in range(32)])
    api = system.api()
    detect = clock.until(lambda: (w := api.worker("broken")) and w["problem"], 30, "the problem to show")
    problem = str(api.worker("broken")["problem"])  # type: ignore[index]
    system.settle(90)
    work.unlink()
    recover = clock.until(lambda: (w := api.worker("broken")) and w["problem"] is None, 30, "the problem to clear")
    figures = system.figures("agent's work dir broken mid-run", detect, recover, note=f"problem shown: {problem}")
    record(figures)
    assert figures.outcomes == {"succeeded": 40}
    handed_back = [a for i in ids for a in attempt_history(system, i) if "agent problem" in str(a["error"] or "")]
    assert all(api.task(i)["retry_count"] == 0 for i in ids)  # a hand-back uses up no retry
    assert "work dir" in problem
    assert broken.running()
    print(f"{len(handed_back)} attempts handed back by the broken agent")


# -- 3 and 4: a new attempt never overlaps the old one -----------------------------------------------------------


@pytest.mark.parametrize("action", ["requeue", "cancel then retry"])
def test_operator_restart_waits_for_the_old_attempt(cluster: Callable[..., Cluster],
                                                    record: Callable[[Figures], None], action: str) -> None:
    """Requeue (or cancel, then retry) running tasks whose processes take a while to die (they ignore SIGTERM for
    two seconds): the new attempt is not leased until the old one is confirmed gone, so they never overlap; the
    task says meanwhile that it waits for its old attempt."""
    system = cluster()
    system.coordinator()
    system.agent("a", 8, "--kill-grace", "2")
    ids = system.submit([ignoring_sigterm(system, 20) for _ in range(4)])
    wait_until(lambda: len(running_on(system, "a")) == 4, 30, "four tasks to run")
    api = system.api()
    clock = Stopwatch()
    for task_id in ids:
        if action == "requeue":
            assert api.http.post(f"/api/v1/tasks/{task_id}/requeue").status_code == 200
        else:
            assert api.http.delete(f"/api/v1/tasks/{task_id}").status_code == 200
            assert api.http.post(f"/api/v1/tasks/{task_id}/retry").status_code == 200
    waiting = api.task(ids[0])
    restarted = clock.until(lambda: all(api.task(i)["attempts"] == 2 for i in ids), 60, "the second attempts")
    for task_id in ids:
        api.http.delete(f"/api/v1/tasks/{task_id}")  # no need to wait 20 s more
    system.settle(60)
    figures = system.figures(f"{action} of tasks slow to die", None, restarted,
                             note=f"second attempts {restarted:.2f}s after the action")
    record(figures)
    runs = sorted(read_records(system.records).values(), key=lambda ex: ex.start)
    for task_id in ids:
        old, new = [ex for ex in runs if ex.task == task_id]
        assert new.start > old.last, "the new attempt started while the old one still ran"
    assert restarted >= 2.0  # the old processes died only at the end of the 2 s kill grace; nothing started before
    assert waiting["status"] == "pending" and waiting["pending_reason"]["code"] == "stopping"


def test_timed_out_task_that_ignores_sigterm_does_not_overlap_its_retry(cluster: Callable[..., Cluster],
                                                                        record: Callable[[Figures], None]) -> None:
    """Timeout 2 s, a task that ignores SIGTERM, an agent whose kill grace (5 s) is longer than the coordinator's
    own timeout grace: the retry starts only once the timed-out attempt is confirmed dead."""
    system = cluster(AIDD_RETRY_BASE_DELAY="0.5")
    system.coordinator()
    system.agent("a", 4, "--kill-grace", "5")
    [task_id] = system.submit([ignoring_sigterm(system, 10, timeout_s=2, max_retries=1)])
    system.settle(60)
    figures = system.figures("timeout, task ignores SIGTERM", None, None)
    record(figures)
    assert overlap_of(figures) == 0
    assert [a["end_reason"] for a in attempt_history(system, task_id)] == ["timeout", "timeout"]


# -- 6: bulk actions of any size ---------------------------------------------------------------------------------


def test_bulk_actions_over_thirty_three_thousand_tasks(cluster: Callable[..., Cluster],
                                                       record: Callable[[Figures], None]) -> None:
    """Cancel by filter over 33 000 pending tasks, and a bulk action naming 100 000 ids: both answer 200 and do
    it all (in chunks), where asyncpg's 32 767-parameter limit made them a misleading 503 before."""
    system = cluster()
    system.coordinator()
    system.submit([{"service": "bulk", "task_type": "noop", "name": "bulk"} for _ in range(33_000)])
    api = system.api()
    clock = Stopwatch()
    cancel = api.http.post("/api/v1/tasks/bulk/cancel", json={"filter": {"service": ["bulk"]}}, timeout=300)
    took = clock.elapsed()
    unknown = [os.urandom(16).hex() for _ in range(100_000)]
    many = api.http.post("/api/v1/tasks/bulk/requeue", json={"ids": unknown}, timeout=300)
    figures = system.figures("bulk cancel of 33 000 tasks", None, took, records=False,
                             note=f"cancel answered {cancel.status_code} in {took:.1f}s; "
                                  f"100 000 ids: {many.status_code}")
    record(figures)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["changed"] == 33_000
    assert many.status_code == 200, many.text
    assert many.json()["skipped"] == 100_000
    assert figures.outcomes == {"cancelled": 33_000}


# -- 7: a locked tasks table -----------------------------------------------------------------------------------


def test_locked_tasks_table_is_503_and_heartbeats_go_on(cluster: Callable[..., Cluster],
                                                        record: Callable[[Figures], None]) -> None:
    """The tasks table locked for 15 s under load: calls that need it answer 503 with Retry-After (never a 500),
    heartbeats keep being answered (no agent is declared lost, no task fenced), and afterwards everything runs."""
    system = cluster()
    coordinator = system.coordinator()
    system.agent("a", 8)
    system.submit([system.task(2) for _ in range(24)])
    wait_until(lambda: system.running_now() >= 8, 30, "the load to run")
    statuses: list[int] = []
    done = threading.Event()

    def call_while_locked() -> None:
        with httpx.Client(base_url=coordinator.url, timeout=60) as http:
            while not done.is_set():
                reply = http.post("/api/v1/tasks", json=system.task(1))
                statuses.append(reply.status_code)
                if reply.status_code == 503:
                    assert reply.headers.get("retry-after"), reply.headers
                time.sleep(0.2)
    caller = threading.Thread(target=call_while_locked, daemon=True)
    with psycopg.connect(system.conninfo) as conn:
        conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        caller.start()
        time.sleep(15)
        conn.rollback()
    done.set()
    caller.join(90)
    system.settle(120)
    figures = system.figures("tasks table locked 15 s", None, None,
                             note=f"answers meanwhile: {sorted(set(statuses))}; worker "
                                  f"{system.api().worker('a')['status']}")  # type: ignore[index]
    record(figures)
    assert 500 not in statuses and set(statuses) <= {201, 503}
    assert "Exception in ASGI application" not in coordinator.output
    assert system.api().worker("a")["status"] == "online"  # type: ignore[index]
    assert figures.duplicate_executions == 0


# -- 8: the keeper's kill is not the task's crash ---------------------------------------------------------------


def test_keeper_kill_is_a_handback_not_a_failure(cluster: Callable[..., Cluster],
                                                 record: Callable[[Figures], None]) -> None:
    """Exclusive tasks with a helper in a session of its own holding their output (`setsid sleep 40 &`), no retries;
    the agent frozen for 3.8 s (under the 4 s timeout, past its keeper's deadline): the keeper kills them, which is
    recorded as a hand-back, never as the task's failure; they run again and succeed, and the agent log says why."""
    system = cluster()
    system.coordinator()
    frozen = system.agent("a", 6)
    recorder = " ".join(system.task(12)["input_params"]["argv"][3:])
    body = {**system.task(12), "max_retries": 0, "exclusive": True,
            "input_params": {"command": f"setsid sleep 40 & exec {sys.executable} -S -I {recorder}", "shell": True}}
    ids = system.submit([body for _ in range(6)])
    wait_until(lambda: len(running_on(system, "a")) == 6, 30, "six tasks to run")
    frozen.signal(signal.SIGSTOP)
    time.sleep(3.8)
    frozen.signal(signal.SIGCONT)
    system.settle(60)
    figures = system.figures("keeper kills exclusive tasks of a frozen agent", None, None)
    record(figures)
    assert figures.outcomes == {"succeeded": 6}  # no retries: a kill counted as the task's failure would fail it
    ends = {str(a["end_reason"]) for i in ids for a in attempt_history(system, i)[:-1]}
    assert ends <= {"requeued", "worker_lost"}, ends  # handed back (or, frozen a little longer, its worker lost)
    assert "killed by the agent's task keeper" in frozen.output


# -- 10: no lease for an agent that is gone ---------------------------------------------------------------------


def test_no_lease_for_an_agent_that_died_while_polling(cluster: Callable[..., Cluster],
                                                       record: Callable[[Figures], None]) -> None:
    """An agent killed while its lease long-polls (20 s): tasks submitted a second later are not granted to it (or
    go straight back), cost no worker loss, and run on the next agent at once."""
    system = cluster(AIDD_LEASE_MAX_WAIT="20", AIDD_HEARTBEAT_TIMEOUT="30")
    system.coordinator()
    dead = system.agent("dead", 4)
    time.sleep(1.0)  # its lease is waiting now
    dead.kill()
    time.sleep(1.0)
    ids = system.submit([system.task(0.5) for _ in range(3)])
    clock = Stopwatch()
    system.agent("b", 4)
    recover = clock.until(lambda: all(system.api().task(i)["status"] == "succeeded" for i in ids), 20,
                          "the tasks to run on b")
    system.settle(30)
    figures = system.figures("agent killed while its lease waits", None, recover)
    record(figures)
    tasks = [system.api().task(i) for i in ids]
    assert all(t["worker_losses"] == 0 for t in tasks)
    assert recover < 10, "the tasks waited for the dead agent's heartbeat timeout"


# -- 11: one flooding task does not wipe its neighbours' logs -----------------------------------------------------


def test_flooding_task_keeps_to_its_own_log(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """On one agent, a task prints about 60 MB while small tasks print two lines each: the small tasks' logs are
    whole, and the flood's stored log stays within its byte cap."""
    system = cluster(AIDD_LOG_MAX_BYTES_PER_ATTEMPT="2000000")
    system.coordinator()
    system.agent("a", 8)
    flood = {"service": "faults", "task_type": "shell", "name": "flood", "resources": {"cpu": 0},
             "input_params": {"argv": ["python3", "-S", "-c",
                                       "import sys\nfor i in range(600000): sys.stdout.write('x' * 100 + '\\n')"]}}
    [flooding] = system.submit([flood])
    small = system.submit([{"service": "faults", "task_type": "shell", "name": "small", "resources": {"cpu": 0},
                            "input_params": {"command": f"echo first {i}; sleep 1; echo second {i}", "shell": True}}
                           for i in range(12)])
    system.settle(120)
    api = system.api()
    whole = [i for n, i in enumerate(small)
             if [ln["line"] for ln in api.http.get(f"/api/v1/tasks/{i}/logs").json()["lines"]]
             == [f"first {n}", f"second {n}"]]
    with psycopg.connect(system.conninfo) as conn:
        row = conn.execute("SELECT coalesce(sum(octet_length(line)), 0) FROM task_logs WHERE task_id = %s",
                           (flooding,)).fetchone()
        first = conn.execute("SELECT stream, line FROM task_logs WHERE task_id = %s ORDER BY id LIMIT 1",
                             (flooding,)).fetchone()
    stored = int(row[0]) if row else 0
    figures = system.figures("a neighbour floods its log", None, None, records=False,
                             note=f"{len(whole)} of 12 small logs whole; flood kept {stored / 1e6:.1f} MB of 60; "
                                  f"its log begins: {first[1] if first else None}")
    record(figures)
    assert len(whole) == 12
    assert stored <= 2_000_000 + 10_000
    assert first is not None and first[0] == "dropped" and re.fullmatch(r"… [\d ]+ lines dropped …", first[1])


# -- 12: nothing a task started outlives it ----------------------------------------------------------------------


def test_daemon_a_task_leaves_dies_with_it(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """A task that starts a daemon in a session of its own and exits: the daemon is gone as soon as the task ends,
    and the report is not held up by the daemon keeping the output pipe open."""
    system = cluster()
    system.coordinator()
    system.agent("a", 2)
    marker = system.work / "daemon.pid"
    body = {"service": "faults", "task_type": "shell", "name": "daemon", "resources": {"cpu": 0},
            "input_params": {"command": f"setsid sleep 60 & echo $! > {marker}; echo started", "shell": True}}
    clock = Stopwatch()
    [task_id] = system.submit([body])
    done = clock.until(lambda: system.api().task(task_id)["status"] == "succeeded", 30, "the task to succeed")
    daemon = int(Path(marker).read_text())
    gone = clock.until(lambda: not alive(daemon), 10, "the daemon to die")
    figures = system.figures("task leaves a setsid daemon", done, gone, records=False,
                             note=f"reported {done:.2f}s after submission; daemon gone at {gone:.2f}s")
    record(figures)
    assert done < 2.0
    assert gone - done < 1.0
