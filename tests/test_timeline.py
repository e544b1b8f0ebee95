"""A task's timeline: submitted by whom, each attempt's lease (worker), start and end with its reason, the retry it
led to, operator actions with who and when, why it waited over time (its queue shape's reasons as the leader recorded
them, a row per change) and why it waits now; over the real API, in `aidd show` too."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from rich.console import Console
from sqlalchemy import select
from textual.widgets import Static

from aiddclient.cli import main as cli_main
from console.screens.detail import TaskDetailScreen
from coordinator.models import PendingReasonChange
from coordinator.pending import SNAPSHOT_TTL_S
from coordinator.reasonhistory import MAX_CHANGES, SETTLE_S, changes, shape_key, shape_of
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from coordinator.timeline import waits
from tests.consolekit import console, refreshed
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body
from tests.support.waiting import wait_until


def timeline(client: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    reply = client.get(f"/api/v1/tasks/{task_id}/timeline")
    assert reply.status_code == 200, reply.text
    return list(reply.json()["events"])


def test_timeline_tells_the_whole_story(api_server: BackgroundServer, client: httpx.Client,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    agent = HttpAgent.register(client, hostname="dock-01", groups=["story"], cpu_cores=4)
    task_id = client.post("/api/v1/tasks", json=task_body(group="story", max_retries=2)).json()["id"]
    [leased] = agent.lease()
    assert agent.report(leased, "started").status_code == 200
    assert agent.report(leased, "failed", reason="error", error="segfault\nin vina", exit_code=139).status_code == 200
    assert client.post(f"/api/v1/tasks/{task_id}/requeue").status_code == 200  # skip the backoff
    [leased] = agent.lease()
    assert client.delete(f"/api/v1/tasks/{task_id}").status_code == 200

    events = timeline(client, task_id)
    assert [e["kind"] for e in events] == ["submitted", "leased", "started", "ended", "retry", "operator",
                                           "leased", "operator", "ended", "finished"]
    texts = [e["text"] for e in events]
    assert texts[0] == "submitted by local (priority 2, group story)"  # keyless loopback: the caller is "local"
    assert texts[1] == "attempt 1 leased by dock-01" and texts[2] == "attempt 1 started on dock-01"
    assert texts[3] == "attempt 1 error: exit 139; segfault"
    assert texts[4].startswith("retry due at ") and events[4]["due_at"] > events[3]["at"]
    assert texts[5].startswith("requeued by ") and texts[5].endswith("(was pending)")
    assert texts[6] == "attempt 2 leased by dock-01"
    assert texts[7].startswith("cancelled by ") and texts[7].endswith("(was running)")
    assert texts[8] == "attempt 2 cancelled" and texts[9] == "cancelled"
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)

    assert cli_main(["show", task_id, "--url", api_server.url]) == 0
    out = capsys.readouterr().out
    assert "timeline" in out and "attempt 1 error: exit 139; segfault" in out and "retry due at" in out


def test_a_waiting_task_ends_its_timeline_with_why(client: httpx.Client) -> None:
    task_id = client.post("/api/v1/tasks", json=task_body(group="nobody")).json()["id"]
    events = timeline(client, task_id)
    assert [e["kind"] for e in events] == ["submitted", "waiting"]
    assert events[-1]["text"] == "waiting: no online worker in group `nobody`" and events[-1]["code"] == "no_group"
    assert client.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000/timeline").status_code == 404


def tick(server: BackgroundServer) -> None:
    """One round of the timers (this coordinator leads: it is the only one)."""
    server.call(server.coordinator.timers.tick)


def reason_codes(client: httpx.Client, task_id: str) -> list[str]:
    return [e["code"] for e in timeline(client, task_id) if e["kind"] == "reason"]


def recorded(server: BackgroundServer, client: httpx.Client, task_id: str, code: str,
             agents: Sequence[HttpAgent] = ()) -> None:
    """Drive the timers until the task's timeline has its shape's reason `code` (a new reason is written once it
    has held for SETTLE_S, from a snapshot of the workers at most SNAPSHOT_TTL_S old); the agents beat meanwhile."""
    def probe() -> bool:
        for agent in agents:
            assert agent.post("heartbeat", {}).status_code == 200
        tick(server)
        return code in reason_codes(client, task_id)
    wait_until(probe, timeout=20, what=f"reason {code} in the timeline", interval=0.3)


def reason_rows(server: BackgroundServer) -> list[tuple[str | None, str]]:
    async def read() -> list[tuple[str | None, str]]:
        async with server.coordinator.core.engine.connect() as conn:
            t = PendingReasonChange
            rows = (await conn.execute(select(t.code, t.message).order_by(t.id))).all()
        return [(r.code, r.message) for r in rows]
    return server.call(read)


def test_the_timeline_says_why_the_task_waited_over_time(api_server: BackgroundServer, client: httpx.Client,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    task_id = client.post("/api/v1/tasks", json=task_body(group="grow", resources={"cpu": 8})).json()["id"]
    recorded(api_server, client, task_id, "no_group")
    assert [e["kind"] for e in timeline(client, task_id)] == ["submitted", "reason"]  # not again as `waiting`
    small = HttpAgent.register(client, hostname="small-01", groups=["grow"], cpu_cores=2)
    recorded(api_server, client, task_id, "too_big", [small])
    roomy = HttpAgent.register(client, hostname="roomy-01", groups=["grow"], cpu_cores=16)
    recorded(api_server, client, task_id, "ready", [small, roomy])
    [leased] = roomy.lease()
    assert leased["task_id"] == task_id

    events = timeline(client, task_id)
    assert [(e["kind"], e.get("code")) for e in events] == [
        ("submitted", None), ("reason", "no_group"), ("reason", "too_big"), ("reason", "ready"), ("leased", None)]
    assert [e["text"] for e in events[1:]] == [
        "waiting: no online worker in group `grow`", "waiting: no worker is big enough: none has 8 cores",
        "waiting: starts at the next lease of a worker with room", "attempt 1 leased by roomy-01"]
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times) and times[1] < times[2] < times[3]
    tick(api_server)  # the task has gone: its shape's reason is no business of its timeline any more
    assert timeline(client, task_id) == events

    assert cli_main(["show", task_id, "--url", api_server.url]) == 0
    out = capsys.readouterr().out
    assert out.index("no online worker in group `grow`") < out.index("none has 8 cores") < out.index("roomy-01")


def test_reasons_are_written_on_a_change_that_holds_not_per_tick(api_server: BackgroundServer,
                                                                 client: httpx.Client) -> None:
    task_id = client.post("/api/v1/tasks", json=task_body(group="steady")).json()["id"]
    for _ in range(3):  # each tick past the snapshot's age decides the shape afresh
        tick(api_server)
        time.sleep(SNAPSHOT_TTL_S + 0.1)
    assert reason_rows(api_server) == [("no_group", "no online worker in group `steady`")]

    agent = HttpAgent.register(client, groups=["steady"], cpu_cores=4)  # ready for a moment only
    tick(api_server)
    assert client.delete(f"/api/v1/workers/{agent.id}", headers=agent.headers).status_code == 200
    time.sleep(SNAPSHOT_TTL_S + 0.1)
    tick(api_server)
    time.sleep(SETTLE_S)
    tick(api_server)
    assert len(reason_rows(api_server)) == 1, "a reason that did not hold for SETTLE_S is not written"

    api_server.coordinator.timers.history.reset()  # a new leader term starts from the table: no second row
    tick(api_server)
    assert len(reason_rows(api_server)) == 1
    recorded(api_server, client, task_id, "ready", [HttpAgent.register(client, groups=["steady"], cpu_cores=4)])
    assert [code for code, _ in reason_rows(api_server)] == ["no_group", "ready"]


def test_a_shape_left_without_tasks_is_closed_so_no_stale_reason_is_shown(api_server: BackgroundServer,
                                                                         client: httpx.Client) -> None:
    history = api_server.coordinator.timers.history
    history.forget_s = 0.0  # closed at the first look without queued tasks (FORGET_S, an hour, in service)
    first = client.post("/api/v1/tasks", json=task_body(group="lapse")).json()["id"]
    recorded(api_server, client, first, "no_group")
    assert client.delete(f"/api/v1/tasks/{first}").status_code == 200
    tick(api_server)
    assert reason_rows(api_server)[-1] == (None, "")
    agent = HttpAgent.register(client, groups=["lapse"], cpu_cores=4)  # no look at the shape meanwhile
    second = client.post("/api/v1/tasks", json=task_body(group="lapse")).json()["id"]
    assert reason_codes(client, second) == [], "the closed shape's old `no_group` is not shown"
    time.sleep(SNAPSHOT_TTL_S + 0.1)  # the next look sees the worker (a new shape's first reason is written at once)
    recorded(api_server, client, second, "ready", [agent])
    assert reason_codes(client, second) == ["ready"]


def test_the_spans_a_task_waited_skip_a_backoff_cut_short() -> None:
    """Waits run from submission, a retry coming due or an operator's requeue to the next lease or the end; a
    backoff a requeue cut short (the next lease before the retry's due time) is no wait."""
    t = [datetime(2026, 12, 2, 12, minute, tzinfo=UTC) for minute in range(10)]
    task = SimpleNamespace(created_at=t[0], status="cancelled", finished_at=t[7])
    attempts = [SimpleNamespace(leased_at=t[1], ended_at=t[2], retry_at=t[6]),
                SimpleNamespace(leased_at=t[4], ended_at=t[7], retry_at=None)]
    requeue = SimpleNamespace(kind="requeue", at=t[3])
    assert waits(task, attempts, [requeue], t[9]) == [(t[0], t[1]), (t[3], t[4])]
    task.status, task.finished_at, attempts[1].ended_at = "pending", None, t[5]  # lost: waits again till now
    assert waits(task, attempts, [requeue], t[9]) == [(t[0], t[1]), (t[3], t[4]), (t[5], t[9])]


@pytest.mark.anyio
async def test_the_console_detail_catches_up_with_a_reason_recorded_after_the_change(
        api_server: BackgroundServer, client: httpx.Client) -> None:
    """The detail view reads the timeline when the task changes, and for a few refreshes after: the leader writes
    a new reason once it has held, seconds after the task's `pending_reason` changed."""
    task_id = client.post("/api/v1/tasks", json=task_body(group="watch", resources={"cpu": 8})).json()["id"]
    recorded(api_server, client, task_id, "no_group")
    app = console(api_server)
    async with app.run_test(size=(160, 50)) as pilot:
        await refreshed(pilot)
        app.push_screen(TaskDetailScreen(task_id))
        await refreshed(pilot)
        small = HttpAgent.register(client, hostname="small-01", groups=["watch"], cpu_cores=2)

        async def since_when() -> bool:
            assert small.post("heartbeat", {}).status_code == 200
            tick(api_server)
            await asyncio.sleep(0.3)
            capture = Console(width=160, record=True, file=io.StringIO())
            capture.print(app.screen.query_one("#timeline", Static).content)
            shown = capture.export_text()
            lines = [line.strip() for line in shown.splitlines() if "none has 8 cores" in line]
            return bool(lines) and not lines[-1].startswith("now")  # recorded: since when, not only "now"
        deadline = time.monotonic() + 20
        while not await since_when():
            assert time.monotonic() < deadline, "the recorded `too_big` never reached the detail's timeline"


def test_a_start_is_recorded_only_for_the_workers_current_attempt(client: httpx.Client) -> None:
    """A `started` on its own (a task running longer than its agent holds the event) is fenced like every report:
    refused (409) from another worker, and for an attempt that is no longer current; the current one's start is
    on the attempt."""
    agent = HttpAgent.register(client, hostname="start-01", groups=["starts"], cpu_cores=4)
    other = HttpAgent.register(client, hostname="start-02", groups=["elsewhere"], cpu_cores=4)
    task_id = client.post("/api/v1/tasks", json=task_body(group="starts")).json()["id"]
    [old] = agent.lease()
    assert other.report(old, "started").status_code == 409
    assert client.post(f"/api/v1/tasks/{task_id}/requeue").status_code == 200
    agent.confirm_stopped()
    [current] = agent.lease()
    assert agent.report(old, "started").status_code == 409
    assert agent.report(current, "started").status_code == 200
    attempts = client.get(f"/api/v1/tasks/{task_id}").json()["attempt_history"]
    assert [a["started_at"] is not None for a in attempts] == [False, True]


@pytest.mark.anyio
async def test_a_long_wait_shows_its_latest_reason_changes(coordinator: Coordinator) -> None:
    """Past MAX_CHANGES the timeline keeps the reason in force when the wait began and the latest changes: the
    ones that say why the task waits now."""
    shape = shape_of("admet\tdefault\t")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"shape_key": shape_key(shape), "code": f"c{i}", "message": "", "at": start + timedelta(minutes=i)}
            for i in range(MAX_CHANGES + 50)]
    async with coordinator.core.engine.begin() as conn:
        await conn.execute(PendingReasonChange.__table__.insert(), rows)
        shown = [row.code for row in await changes(conn, shape, start, start + timedelta(days=1))]
    assert shown == ["c0", *(f"c{i}" for i in range(50, MAX_CHANGES + 50))]
