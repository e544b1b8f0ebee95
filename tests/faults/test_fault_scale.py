"""Two coordinator processes on one Redis and one PostgreSQL, agents split between them: thousands of no-op
tasks, each handed out once and accepted once."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.faults.cluster import Cluster
from tests.faults.truth import Figures, system_view

pytestmark = pytest.mark.slow
TASKS = int(os.environ.get("AIDD_FAULTS_SCALE_TASKS", "5000"))
"""How many tasks (AIDD_FAULTS_SCALE_TASKS overrides, e.g. for a soak)."""


def test_two_coordinators_share_the_work(cluster: Callable[..., Cluster], record: Callable[[Figures], None]) -> None:
    """5 000 `noop` tasks submitted half to each coordinator, run by four agents, two on each: every task is
    leased once, succeeds once, and the work really was shared."""
    system = cluster()
    first, second = system.coordinator("c1"), system.coordinator("c2")
    agents = [system.agent(f"n{i}", 8, coordinator=(first, second)[i % 2], wait=False) for i in range(4)]
    for agent in agents:
        system.worker_id(agent.name)
    started = time.monotonic()
    bodies = [{"service": "scale", "task_type": "noop", "name": f"noop {i}", "resources": {"cpu": 0}}
              for i in range(TASKS)]
    half = TASKS // 2
    system.submit(bodies[:half], system.api(first))
    system.submit(bodies[half:], system.api(second))
    system.settle(600)
    elapsed = time.monotonic() - started
    figures = system.figures("two coordinators, noop tasks", records=False,
                             note=f"{TASKS / elapsed:.0f} tasks/s end to end")
    record(figures)
    tasks, attempts = system_view(system.conninfo, system.ledger.ids())
    assert figures.outcomes == {"succeeded": TASKS}
    assert {t["attempts"] for t in tasks.values()} == {1} and len(attempts) == TASKS
    by_worker = Counter(a["worker_id"] for a in attempts)
    assert len(by_worker) == 4 and min(by_worker.values()) > TASKS / 20, by_worker
