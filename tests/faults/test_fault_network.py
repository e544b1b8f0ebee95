"""Lost responses: a completion the coordinator applied but whose answer never came back, and a lease reply lost
on its way to the agent. Exactly one outcome each, nothing stuck."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.faults.cluster import Cluster, Stopwatch
from tests.faults.processes import Coordinator
from tests.faults.proxy import LossyProxy
from tests.faults.truth import Figures, read_records, system_view

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy_of() -> Iterator[Callable[[Coordinator], LossyProxy]]:
    """A lossy proxy in front of a coordinator; stopped afterwards."""
    started: list[LossyProxy] = []

    def make(coordinator: Coordinator) -> LossyProxy:
        proxy = LossyProxy(coordinator.port).start()
        started.append(proxy)
        return proxy
    yield make
    for proxy in started:
        proxy.stop()


def path_and_body(message: bytes) -> tuple[bytes, bytes]:
    """The request target (or status line) and the body of an HTTP message."""
    head, _, body = message.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def successful_report(request: bytes, response: bytes) -> bool:
    line, body = path_and_body(request)
    return line.startswith(b"POST ") and b"/reports " in line and b'"succeeded"' in body and b" 200 " in response[:20]


def lease_with_tasks(request: bytes, response: bytes) -> bool:
    line, _ = path_and_body(request)
    return b"/lease " in line and b'"attempt_id"' in path_and_body(response)[1]


def test_lost_completion_response(cluster: Callable[..., Cluster], proxy_of: Callable[[Coordinator], LossyProxy],
                                  record: Callable[[Figures], None]) -> None:
    """The coordinator records a success but its answer is lost: the agent sends the report again, the
    coordinator refuses the repeat (that attempt is no longer running), and the task has one outcome."""
    system = cluster()
    proxy = proxy_of(system.coordinator())
    drop = proxy.lose(successful_report, times=4)
    system.agent("a", 2, url=proxy.url)
    ids = system.submit([system.task(0.5) for _ in range(6)])
    system.settle(60)
    lost = {e["attempt_id"] for request, _ in drop.lost for e in json.loads(path_and_body(request)[1])["events"]
            if e["event"] == "succeeded"}
    system.await_refused(len(lost))  # each lost answer's report comes again and is refused
    figures = system.figures("lost completion response", note=f"{len(lost)} successes' answers lost")
    record(figures)
    assert len(drop.lost) >= 2
    assert figures.outcomes == {"succeeded": 6} and figures.duplicate_executions == 0
    assert figures.stale_refused >= len(lost)
    tasks, _ = system_view(system.conninfo, ids)
    assert all(t["attempts"] == 1 for t in tasks.values())


def test_lost_lease_reply(cluster: Callable[..., Cluster], proxy_of: Callable[[Coordinator], LossyProxy],
                          record: Callable[[Figures], None]) -> None:
    """A lease the coordinator confirmed but the agent never heard of is not stuck: the agent's heartbeats do
    not list it, so after a heartbeat timeout the coordinator requeues it, and it runs once."""
    system = cluster()
    coordinator = system.coordinator()
    proxy = proxy_of(coordinator)
    drop = proxy.lose(lease_with_tasks, times=1)
    system.agent("a", 1, url=proxy.url)
    clock = Stopwatch()
    system.submit([system.task(0.5) for _ in range(3)])
    clock.until(lambda: drop.lost, 30, "a lease reply to be lost")
    [(_, response)] = drop.lost
    lost = json.loads(path_and_body(response)[1])["tasks"][0]
    api = system.api()
    seen = clock.times({"detect": lambda: api.task(lost["task_id"])["attempts"] >= 2,
                        "recover": lambda: api.task(lost["task_id"])["status"] == "succeeded"}, 60)
    system.settle(60)
    figures = system.figures("lost lease reply", seen["detect"], seen["recover"])
    record(figures)
    history = api.task(lost["task_id"])["attempt_history"]
    assert history[0]["id"] == lost["attempt_id"] and history[0]["end_reason"] == "requeued"
    assert "does not run it" in (history[0]["error"] or "")
    assert lost["attempt_id"] not in read_records(system.records)  # the lost attempt never ran
    assert figures.outcomes == {"succeeded": 3} and figures.duplicate_executions == 0
