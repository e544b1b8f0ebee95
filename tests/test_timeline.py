"""A task's timeline: submitted by whom, each attempt's lease (worker), start and end with its reason, the retry it
led to, operator actions with who and when, and why it waits now; over the real API, in `aidd show` too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from coordinator.cli import main as cli_main
from coordinator.server import BackgroundServer
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body


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
