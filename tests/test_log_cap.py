"""When the per-attempt log cap drops lines, the log says so where they were dropped, with how many: over the API,
in `aidd logs` and in the console's log view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis

from aiddclient.cli import main as cli_main
from coordinator.config import Settings
from coordinator.server import BackgroundServer
from tests.consolekit import console, refreshed, until
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body

KEEP = 50
pytestmark = pytest.mark.anyio


@pytest.fixture
def capped(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[BackgroundServer]:
    """The API with a cap of KEEP lines per attempt."""
    server = BackgroundServer(settings.model_copy(update={"port": 0, "log_max_lines_per_attempt": KEEP}),
                              timers=False).start()
    yield server
    server.stop()


@pytest.fixture
def http(capped: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=capped.url, timeout=30) as client:
        yield client


def flood(http: httpx.Client, batches: int, per_batch: int = 100) -> tuple[str, HttpAgent, dict[str, Any]]:
    """A running task whose attempt logged `batches * per_batch` numbered lines, in reports of `per_batch`."""
    task_id = http.post("/api/v1/tasks", json=task_body(name="flood")).json()["id"]
    agent = HttpAgent.register(http, cpu_cores=2)
    [leased] = agent.lease()
    for b in range(batches):
        lines = [{"stream": "stdout", "line": f"line {b * per_batch + i}"} for i in range(per_batch)]
        assert agent.report(leased, "log", lines=lines).status_code == 200
    return task_id, agent, leased


def lines_of(http: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    return list(http.get(f"/api/v1/tasks/{task_id}/logs").json()["lines"])


def test_the_log_says_how_many_lines_the_cap_dropped_and_where(http: httpx.Client) -> None:
    task_id, agent, leased = flood(http, batches=3)  # three trims: the count adds up across them
    lines = lines_of(http, task_id)
    assert lines[0] == {**lines[0], "stream": "dropped", "line": f"… {300 - KEEP} lines dropped …"}
    assert [ln["line"] for ln in lines[1:]] == [f"line {i}" for i in range(300 - KEEP, 300)]
    assert agent.report(leased, "log", lines=[{"stream": "stderr", "line": "one more"}]).status_code == 200
    lines = lines_of(http, task_id)
    assert lines[0]["line"] == f"… {301 - KEEP} lines dropped …" and len(lines) == KEEP + 1
    assert lines[-1]["line"] == "one more"


def test_thousands_are_spaced(http: httpx.Client) -> None:
    task_id, _, _ = flood(http, batches=11, per_batch=100)
    assert lines_of(http, task_id)[0]["line"] == f"… {1100 - KEEP:,} lines dropped …".replace(",", " ")


def test_aidd_logs_prints_the_note_where_the_lines_went(capped: BackgroundServer, http: httpx.Client,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    task_id, _, _ = flood(http, batches=2)
    assert cli_main(["logs", task_id, "--url", capped.url]) == 0
    out, err = capsys.readouterr()
    assert err == f"… {200 - KEEP} lines dropped …\n"  # a note, not the task's output
    assert out.splitlines() == [f"line {i}" for i in range(200 - KEEP, 200)]


async def test_the_console_log_view_shows_the_note(capped: BackgroundServer, http: httpx.Client) -> None:
    from console.screens.detail import TaskDetailScreen

    task_id, _, _ = flood(http, batches=2)
    app = console(capped)
    async with app.run_test(size=(120, 40)) as pilot:
        await refreshed(pilot)
        app.push_screen(TaskDetailScreen(task_id, log_maximised=True))
        detail = await refreshed(pilot)
        log_widget = detail.query_one("#log")

        def text() -> list[str]:
            return [strip.text for strip in log_widget.lines]  # type: ignore[attr-defined]

        await until(pilot, lambda: "line 199" in "\n".join(text()), what="the log")
        shown = text()
        assert shown[1] == f"… {200 - KEEP} lines dropped …" and shown[2] == f"line {200 - KEEP}"
