"""Console keys drive real API calls: each test presses keys in a pilot and checks the record in PostgreSQL."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.text import Text
from textual.app import Notify
from textual.coordinate import Coordinate
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Static

from aiddclient.client import CoordinatorClient
from aiddclient.views import WorkerView
from console.options import QuitChoice
from console.screens.confirm import ConfirmModal
from console.screens.filter import FilterModal
from console.screens.help import HelpModal
from console.screens.limit import ServiceLimitModal
from console.screens.quit import QuitModal
from console.screens.submit import SubmitModal
from console.screens.tasks import TasksScreen
from console.widgets.queue_table import QueueTable
from console.widgets.task_table import TaskTable
from console.widgets.worker_table import WorkerTable
from coordinator.server import BackgroundServer
from tests.consolekit import (
    SlowTransport,
    SwitchTransport,
    console,
    record,
    refreshed,
    scripted_agent,
    task_rows,
    until,
)
from tests.support.tasks import task_body

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


class Toasts:
    """Collects the console's notifications (a `message_hook`)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: Message) -> None:
        if isinstance(message, Notify):
            self.messages.append(message.notification.message)

    def saying(self, text: str) -> str | None:
        """The first toast containing `text`."""
        return next((m for m in self.messages if text in m), None)


async def open_tasks(pilot: Any) -> TaskTable:
    """Switch to the Tasks pane and wait for its first page."""
    await refreshed(pilot)
    await pilot.press("3")
    screen = await refreshed(pilot)
    return screen.query_one(TaskTable)


async def test_c_cancels_the_running_task_in_the_record(api_server: BackgroundServer, client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body(name="dock me")).json()
    agent = scripted_agent(client)
    assert [t["task_id"] for t in agent.lease()] == [task["id"]]
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        table = await open_tasks(pilot)
        assert table.cursor_key == task["id"]
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("Cancelled 1 task"), what="the outcome toast")
    row = task_rows(api_server, [task["id"]])[task["id"]]
    assert row["status"] == "cancelled"
    attempt = record(api_server, "SELECT end_reason, ended_at FROM attempts WHERE id = :a", a=row["attempt_id"])[0]
    assert attempt["end_reason"] == "cancelled" and attempt["ended_at"] is not None
    commands = agent.heartbeat([task["id"]])["commands"]  # the kill order reaches the agent with its heartbeat
    assert [(c["command"], c["args"]["task_id"]) for c in commands] == [("cancel-task", task["id"])]


async def test_r_retries_a_failed_task_which_then_gets_a_new_attempt(api_server: BackgroundServer,
                                                                     client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body(name="flaky", max_retries=0)).json()
    agent = scripted_agent(client)
    first = agent.lease()[0]
    agent.fail(first, "segfault")
    assert task_rows(api_server, [task["id"]])[task["id"]]["status"] == "failed"
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await open_tasks(pilot)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("Retried 1 task"), what="the outcome toast")
    assert task_rows(api_server, [task["id"]])[task["id"]]["status"] == "pending"
    second = agent.lease()[0]
    row = task_rows(api_server, [task["id"]])[task["id"]]
    assert row["status"] == "running" and row["attempts"] == 2
    assert second["attempt_id"] != first["attempt_id"] and str(row["attempt_id"]) == second["attempt_id"]


async def test_r_on_a_running_task_changes_nothing_and_says_why(api_server: BackgroundServer,
                                                                client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body()).json()
    scripted_agent(client).lease()
    toasts = Toasts()
    async with console(api_server).run_test(size=SIZE, message_hook=toasts) as pilot:
        await open_tasks(pilot)
        await pilot.press("r")
        message = await until(pilot, lambda: toasts.saying("Cannot retry"), what="the refusal")
    assert "running" in message and "R to requeue" in message
    assert task_rows(api_server, [task["id"]])[task["id"]]["status"] == "running"


async def test_bulk_requeue_by_filter_moves_exactly_the_matching_tasks(api_server: BackgroundServer,
                                                                       client: httpx.Client) -> None:
    docking = [client.post("/api/v1/tasks", json=task_body("docking", "vina")).json()["id"] for _ in range(3)]
    admet = [client.post("/api/v1/tasks", json=task_body("admet")).json()["id"] for _ in range(2)]
    dock_agent = scripted_agent(client, "gpu-1", services=["docking"])
    done = dock_agent.lease()[0]  # the first docking task runs and succeeds: not requeueable
    client.post(f"/api/v1/workers/{dock_agent.id}/reports", headers=dock_agent.headers, json={"events": [
        {"task_id": done["task_id"], "attempt_id": done["attempt_id"], "event": "succeeded", "result": {}}]})
    running_dock = dock_agent.lease()[0]
    running_admet = scripted_agent(client, "cpu-1", services=["admet"]).lease()[0]
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await open_tasks(pilot)
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, FilterModal), what="the filter")
        app.screen.query_one("#service").value = "docking"  # type: ignore[attr-defined]
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, TasksScreen)
        await until(pilot, lambda: screen.view.query.service == ("docking",) and screen.total == 3, what="filter")
        await pilot.press("a", "R")
        dialog = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmModal) else None)
        body = str(dialog.query_one(".dialog-body").render())
        assert "Requeue the 1 task matching service docking that is running?" in body
        assert "Of the 1 pending one" in body  # a task already queued stays where it is
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("Requeued 1 task; 1 task skipped"), what="the outcome toast")
    rows = task_rows(api_server, docking + admet)
    assert {i: r["status"] for i, r in rows.items()} == {
        done["task_id"]: "succeeded", running_dock["task_id"]: "pending", docking[2]: "pending",
        running_admet["task_id"]: "running", admet[1]: "pending"}
    ended = record(api_server, "SELECT task_id, end_reason FROM attempts WHERE end_reason = 'requeued'")
    assert [str(r["task_id"]) for r in ended] == [running_dock["task_id"]]
    audit = record(api_server, "SELECT action, count FROM audit WHERE action = 'task.requeue'")
    assert audit == [{"action": "task.requeue", "count": 1}]
    assert task_rows(api_server, [running_dock["task_id"]])[running_dock["task_id"]]["attempts"] == 1


async def test_selection_with_space_cancels_only_the_selected(api_server: BackgroundServer,
                                                             client: httpx.Client) -> None:
    ids = [client.post("/api/v1/tasks", json=task_body(name=f"t{i}")).json()["id"] for i in range(4)]
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        table = await open_tasks(pilot)
        first = table.cursor_key
        await pilot.press("space", "down", "space", "c")  # select rows 1 and 3 (space moves down)
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("Cancelled 2 tasks"), what="the outcome toast")
    newest_first = list(reversed(ids))
    assert first == newest_first[0]
    statuses = {i: r["status"] for i, r in task_rows(api_server, ids).items()}
    assert [statuses[i] for i in newest_first] == ["cancelled", "pending", "cancelled", "pending"]


async def test_n_no_for_the_confirmation_changes_nothing(api_server: BackgroundServer, client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body()).json()
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await open_tasks(pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, TasksScreen), what="the dialog to close")
    assert task_rows(api_server, [task["id"]])[task["id"]]["status"] == "pending"


async def test_a_worker_with_a_problem_says_so(api_server: BackgroundServer, client: httpx.Client) -> None:
    """A host whose agent reports a problem (its work dir full) shows `problem` as its status in the Workers
    pane, and the API names the problem."""
    agent = scripted_agent(client, "full-disk")
    problem = "work dir /scratch/aidd: only 900 KiB free"
    client.post(f"/api/v1/workers/{agent.id}/heartbeat", json={"current_tasks": [], "problem": problem},
                headers=agent.headers).raise_for_status()
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("2")
        await refreshed(pilot)
        table = app.screen.query_one(WorkerTable)
        assert table.worker_at_cursor().problem == problem  # type: ignore[union-attr]
        assert str(table.get_cell_at(Coordinate(table.cursor_row, 1))) == "problem"


async def test_d_drains_and_resumes_a_worker(api_server: BackgroundServer, client: httpx.Client) -> None:
    agent = scripted_agent(client, "gpu-node-7")
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("2")
        await refreshed(pilot)
        assert app.screen.query_one(WorkerTable).worker_at_cursor().id == agent.id  # type: ignore[union-attr]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("gpu-node-7: draining"), what="the drain toast")
        assert record(api_server, "SELECT status FROM workers")[0]["status"] == "draining"
        table = app.screen.query_one(WorkerTable)
        await until(pilot, lambda: table.worker_at_cursor().status == "draining")  # type: ignore[union-attr]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("gpu-node-7: resumed"), what="the resume toast")
    assert record(api_server, "SELECT status FROM workers")[0]["status"] == "online"
    assert [c["command"] for c in agent.heartbeat([])["commands"]] == ["drain", "resume"]


async def test_p_pauses_and_m_limits_a_service_in_the_registry(api_server: BackgroundServer,
                                                                client: httpx.Client) -> None:
    """On the Queues pane `p` pauses the service under the cursor (after a confirmation), which the table shows;
    `m` sets its running limit in a dialog that refuses a non-number; `p` again resumes it."""
    client.post("/api/v1/tasks", json=task_body(service="docking"))
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        table = app.screen.query_one(QueueTable)
        assert table.cursor_key == "docking"
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("docking: paused"), what="the pause toast")
        assert record(api_server, "SELECT paused FROM services WHERE name = 'docking'")[0]["paused"] is True
        await until(pilot, lambda: "paused" in str(table.get_row("docking")[1]), what="the paused state")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ServiceLimitModal), what="the limit dialog")
        await pilot.press("x", "enter")
        assert isinstance(app.screen, ServiceLimitModal)
        await pilot.press("backspace", "3", "enter")
        await until(pilot, lambda: toasts.saying("docking: at most 3 running"), what="the limit toast")
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("docking: resumed"), what="the resume toast")
    assert record(api_server, "SELECT paused, max_running FROM services") == [{"paused": False, "max_running": 3}]


async def test_batch_retry_key_retries_only_its_failed_tasks(api_server: BackgroundServer,
                                                             client: httpx.Client) -> None:
    batch = client.post("/api/v1/tasks", json={"name": "screen", "tasks": [task_body(max_retries=0)] * 3}).json()
    other = client.post("/api/v1/tasks", json=task_body(max_retries=0)).json()
    agent = scripted_agent(client)
    for leased in agent.lease(4):
        if leased["task_id"] != batch["ids"][2]:
            agent.fail(leased)
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("4")
        await refreshed(pilot)
        await pilot.press("r")
        dialog = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmModal) else None)
        assert "Retry the 2 tasks of batch 'screen'" in str(dialog.query_one(".dialog-body").render())
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("Retried 2 tasks of batch screen"), what="the outcome toast")
    statuses = {i: r["status"] for i, r in task_rows(api_server, [*batch["ids"], other["id"]]).items()}
    assert statuses == {batch["ids"][0]: "pending", batch["ids"][1]: "pending", batch["ids"][2]: "running",
                        other["id"]: "failed"}


async def test_batch_export_key_writes_the_results_table_and_says_where(api_server: BackgroundServer,
                                                                        client: httpx.Client, tmp_path: Path) -> None:
    molecules = {"smiles": ["CCO", "C1CC"], "names": ["ethanol", "broken"]}
    batch = client.post("/api/v1/tasks", json={"name": "screen", "tasks": [task_body(input_params=molecules)]}).json()
    agent = scripted_agent(client)
    (leased,) = agent.lease(1)
    rows = [{"name": "ethanol", "smiles": "CCO", "qed": 0.41}, {"name": "broken", "smiles": "C1CC", "error": "bad"}]
    agent.succeed(leased, {"rows": rows, "columns": ["name", "smiles", "qed", "error"]})
    toasts = Toasts()
    app = console(api_server, export_dir=tmp_path)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("4")
        await refreshed(pilot)
        await pilot.press("e")
        path = tmp_path / f"results-{batch['batch_id'][:8]}.csv"
        await until(pilot, lambda: toasts.saying(f"Wrote the results of batch screen to {path}"), what="the toast")
    lines = path.read_text().splitlines()
    assert lines[0] == "name,smiles,task_id,attempt,status,error,qed"
    assert lines[1:] == [f"ethanol,CCO,{leased['task_id']},1,succeeded,,0.41",
                         f"broken,C1CC,{leased['task_id']},1,succeeded,bad,"]


async def test_submit_form_creates_the_task_and_refuses_bad_json(api_server: BackgroundServer) -> None:
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("n")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, SubmitModal) else None)
        modal.query_one("#service").value = "docking"
        modal.query_one("#task_type").value = "vina"
        modal.query_one("#name").value = "EGFR pose check"
        modal.query_one("#priority").value = "3"
        modal.query_one("#gpu").value = "1"
        modal.query_one("#params").text = '{"receptor": "1M17.pdbqt",'
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "not JSON" in str(modal.query_one("#form-error").render()), what="the error")
        assert record(api_server, "SELECT count(*) AS n FROM tasks")[0]["n"] == 0
        modal.query_one("#params").text = '{"receptor": "1M17.pdbqt", "n": 123456789012345678901234567890}'
        await pilot.press("ctrl+s")  # the coordinator's 422, its field named once
        await until(pilot, lambda: str(modal.query_one("#form-error").render()).startswith(
            "Not submitted: input_params.n: the integer 123456789012345678901234567890 is beyond 64 bits"),
            what="the refusal")
        assert record(api_server, "SELECT count(*) AS n FROM tasks")[0]["n"] == 0
        modal.query_one("#params").text = '{"receptor": "1M17.pdbqt", "smiles": "CCO"}'
        await pilot.press("ctrl+s")
        await until(pilot, lambda: toasts.saying("Submitted task"), what="the submitted toast")
    rows = record(api_server, "SELECT service, task_type, name, priority, gpu, input_params FROM tasks")
    assert rows == [{"service": "docking", "task_type": "vina", "name": "EGFR pose check", "priority": 3,
                     "gpu": 1.0, "input_params": {"receptor": "1M17.pdbqt", "smiles": "CCO"}}]


async def test_submit_batch_from_file_sends_it_in_chunks(api_server: BackgroundServer, tmp_path: Path) -> None:
    smiles = tmp_path / "ligands.smi"
    smiles.write_text("\n".join(f"C{'C' * (i % 7)}O{i}" for i in range(2500)) + "\n")
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("n")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, SubmitModal) else None)
        modal.query_one("#file").value = str(smiles)
        await pilot.press("ctrl+s")
        message = await until(pilot, lambda: toasts.saying("Submitted 2500 tasks as batch"), timeout=60)
    assert "ligands.smi" in message
    rows = record(api_server, "SELECT count(*) AS n, count(DISTINCT batch_id) AS batches FROM tasks")
    assert rows == [{"n": 2500, "batches": 1}]
    assert record(api_server, "SELECT name, total FROM batches") == [{"name": "ligands.smi", "total": 2500}]
    assert record(api_server, "SELECT name FROM tasks WHERE input_params->>'smiles' = 'CO0'") == [{"name": "CO0"}]


async def test_the_submit_dialogs_name_names_the_batch(api_server: BackgroundServer, tmp_path: Path) -> None:
    (tmp_path / "hits.smi").write_text("CCO\nCCN\n")
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("n")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, SubmitModal) else None)
        modal.query_one("#file").value = str(tmp_path / "hits.smi")
        modal.query_one("#name").value = "hERG follow-up"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: toasts.saying("Submitted 2 tasks as batch"), timeout=30)
    assert record(api_server, "SELECT name FROM batches") == [{"name": "hERG follow-up"}]
    assert record(api_server, "SELECT name FROM tasks ORDER BY name") == [{"name": "CCN"}, {"name": "CCO"}]


async def test_read_only_hides_and_ignores_destructive_keys(api_server: BackgroundServer,
                                                           client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body()).json()
    app = console(api_server, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await open_tasks(pilot)
        shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
        assert not shown & {"cancel", "retry", "requeue", "new"}
        await pilot.press("c", "R", "n")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TasksScreen)
    assert task_rows(api_server, [task["id"]])[task["id"]]["status"] == "pending"


async def test_a_slow_coordinator_never_blocks_keys(api_server: BackgroundServer) -> None:
    slow = CoordinatorClient(api_server.url, transport=SlowTransport(10.0))
    app = console(api_server, client=slow)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        screen = app.screen
        assert screen.polling  # type: ignore[attr-defined]  # the first poll is waiting on the coordinator
        started = time.monotonic()
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpModal), timeout=4.0, what="the help screen")
        await pilot.press("escape", "3")
        await until(pilot, lambda: isinstance(app.screen, TasksScreen), timeout=4.0, what="the Tasks pane")
        assert screen.polling  # type: ignore[attr-defined]  # keys were handled while that poll still waited
        assert time.monotonic() - started < 8.0  # well before its answer (10 s): not after it, in another poll
        await until(pilot, lambda: "slow" in app.problem, timeout=6, what="the slow banner")
        await until(pilot, lambda: app.screen.refreshes >= 1 and not app.problem, timeout=15, what="recovery")


async def test_banner_when_the_coordinator_goes_away_and_recovery(api_server: BackgroundServer,
                                                                  client: httpx.Client) -> None:
    client.post("/api/v1/tasks", json=task_body(name="survivor"))
    switch = SwitchTransport()
    app = console(api_server, client=CoordinatorClient(api_server.url, transport=switch))
    async with app.run_test(size=SIZE) as pilot:
        table = await open_tasks(pilot)
        switch.down = True
        await until(pilot, lambda: "cannot reach the coordinator" in app.problem, timeout=5, what="the banner")
        assert table.row_count == 1  # the last data stays on screen
        await pilot.press("question_mark", "escape")  # still usable
        switch.down = False
        await until(pilot, lambda: not app.problem, timeout=8, what="recovery")


async def test_a_failing_pane_shows_its_error_and_the_app_goes_on(api_server: BackgroundServer) -> None:
    class BrokenWorkers(CoordinatorClient):
        async def workers(self, group: str | None = None, status: str | None = None) -> list[WorkerView]:
            return [{"no": "id"}]  # type: ignore[list-item]  # not a view: the pane's apply fails on it

    app = console(api_server, client=BrokenWorkers(api_server.url))
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("2")
        screen = await refreshed(pilot)
        banner = screen.query_one("#pane-error")
        assert banner.display and "could not show its data" in str(banner.render())
        await pilot.press("1")
        await refreshed(pilot)
        assert app.is_running


async def test_task_text_is_shown_as_plain_text(api_server: BackgroundServer, client: httpx.Client) -> None:
    hostile = "[b]x[/] \x1b[31mred\x1b[0m \x1b]0;title\x07ok"
    task = client.post("/api/v1/tasks", json=task_body(name=hostile)).json()
    async with console(api_server).run_test(size=SIZE) as pilot:
        table = await open_tasks(pilot)
        name = table.get_cell(task["id"], "name")
    assert isinstance(name, Text)
    assert name.plain == "[b]x[/] red ok"
    assert not name.spans


async def test_t_switches_theme_and_remembers_it(api_server: BackgroundServer, tmp_path: Path) -> None:
    app = console(api_server, state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "aidd-dark"
        await pilot.press("t")
        await pilot.pause()
        assert app.theme == "aidd-light"
    again = console(api_server, state_dir=tmp_path)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.theme == "aidd-light"


async def test_enter_opens_the_detail_with_a_live_log_tail(api_server: BackgroundServer,
                                                           client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body(name="logger")).json()
    agent = scripted_agent(client)
    leased = agent.lease()[0]

    def log(*lines: str) -> None:
        event = {"task_id": leased["task_id"], "attempt_id": leased["attempt_id"], "event": "log",
                 "lines": [{"stream": "stdout", "line": line} for line in lines]}
        client.post(f"/api/v1/workers/{agent.id}/reports", json={"events": [event]}, headers=agent.headers)

    log("line one", "line two")
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await open_tasks(pilot)
        await pilot.press("enter")
        detail = await refreshed(pilot)
        assert detail.task_id == task["id"]  # type: ignore[attr-defined]
        log_widget = detail.query_one("#log")

        def text() -> str:
            return "\n".join(strip.text for strip in log_widget.lines)  # type: ignore[attr-defined]

        await until(pilot, lambda: "line two" in text(), what="the first lines")
        log("line three \x1b[1mbold\x1b[0m")
        await until(pilot, lambda: "line three bold" in text(), what="the new line, followed")
        assert text().count("line one") == 1


async def test_the_detail_lists_input_and_output_files_with_their_sizes(api_server: BackgroundServer,
                                                                       client: httpx.Client) -> None:
    body = {**task_body(name="with files"), "outputs": ["*.sdf"]}
    task = client.post("/api/v1/tasks", data={"task": json.dumps(body)},
                       files=[("files", ("ligands.smi", b"C" * 2048))]).json()
    agent = scripted_agent(client)
    leased = agent.lease()[0]
    put = client.put(f"/api/v1/workers/{agent.id}/attempts/{leased['attempt_id']}/outputs/poses.sdf",
                     content=b"x" * 5, headers=agent.headers)
    assert put.status_code == 201, put.text
    client.post(f"/api/v1/workers/{agent.id}/reports", headers=agent.headers, json={"events": [
        {"task_id": leased["task_id"], "attempt_id": leased["attempt_id"], "event": "succeeded", "result": {}}]})
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await open_tasks(pilot)
        await pilot.press("enter")
        detail = await refreshed(pilot)
        assert detail.task_id == task["id"]  # type: ignore[attr-defined]
        files = detail.query_one("#files")

        def shown() -> str:
            capture = Console(width=100, record=True, file=io.StringIO())
            capture.print(files.content)  # type: ignore[attr-defined]
            return capture.export_text()

        await until(pilot, lambda: "poses.sdf" in shown(), what="the files section")
        assert "ligands.smi" in shown() and "2.0 KiB" in shown() and "5 B" in shown() and "out #1" in shown()


async def test_the_detail_shows_a_molecule_result_as_a_table(api_server: BackgroundServer,
                                                             client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json=task_body(name="props")).json()
    agent = scripted_agent(client)
    (leased,) = agent.lease()
    columns = ["name", "smiles", "canonical_smiles", "mw", "qed", "hbd", "hba", "rings", "tpsa", "brenk_alerts",
               "error"]
    rows = [{"name": "aspirin", "smiles": "CC(=O)Oc1ccccc1C(=O)O", "mw": 180.159, "qed": 0.55012, "hbd": 1, "hba": 3,
             "rings": 1, "tpsa": 63.6, "brenk_alerts": ["phenol_ester"]},
            {"name": "broken", "smiles": "C1CC", "error": "invalid SMILES: 'C1CC'"}]
    agent.succeed(leased, {"rows": rows, "columns": columns, "molecules": 2, "errors": 1})
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await open_tasks(pilot)
        await pilot.press("enter")
        detail = await refreshed(pilot)
        assert detail.task_id == task["id"]  # type: ignore[attr-defined]
        outcome = detail.query_one("#outcome")

        def shown() -> list[str]:
            capture = Console(width=160, record=True, file=io.StringIO())
            capture.print(outcome.content)  # type: ignore[attr-defined]
            return [" ".join(line.split()) for line in capture.export_text().splitlines()]

        await until(pilot, lambda: "aspirin" in "".join(shown()), what="the molecule table")
    assert "name smiles mw qed hbd hba rings tpsa error" in shown()
    assert "aspirin CC(=O)Oc1ccccc1C(=O)O 180.2 0.5501 1 3 1 63.6" in shown()
    assert "broken C1CC invalid SMILES: 'C1CC'" in shown()
    assert "2 molecules, 1 with an error; 1 more columns" in shown()


async def test_mouse_switches_panes_and_sorts_by_a_header_click(api_server: BackgroundServer,
                                                                client: httpx.Client) -> None:
    for priority in (1, 3, 2):
        client.post("/api/v1/tasks", json=task_body(name=f"p{priority}", priority=priority))
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.click("#tab-tasks")
        screen = await until(pilot, lambda: app.screen if isinstance(app.screen, TasksScreen) else None)
        await refreshed(pilot)
        table = screen.query_one(TaskTable)
        columns = table.ordered_columns
        x = sum(c.get_render_width(table) for c in columns[:[c.key for c in columns].index("priority")]) + 1
        await pilot.click(TaskTable, offset=(x, 0))
        await until(pilot, lambda: screen.view.sort == "priority" and [
            table.get_cell(str(r.key.value), "priority").plain for r in table.ordered_rows] == ["3", "2", "1"],
            what="rows sorted by priority")
        assert [c.label.plain for c in table.ordered_columns if c.key == "priority"] == ["Pri ▼"]  # the sort arrow
        await pilot.click(TaskTable, offset=(x, 2))  # the second row (header, then rows)
        await pilot.click(TaskTable, offset=(x, 2))  # clicking the highlighted row opens it
        await until(pilot, lambda: type(app.screen).__name__ == "TaskDetailScreen", what="the detail")
        detail = await refreshed(pilot)
        assert detail.record.name == "p2"  # type: ignore[attr-defined]


async def test_colon_opens_the_command_palette_with_the_panes(api_server: BackgroundServer) -> None:
    from textual.command import CommandPalette

    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("colon")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.press(*"batches pane")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app.current_mode == "batches", what="the Batches pane")


# -- q: what becomes of running work ----------------------------------------------------------------

async def quit_dialog(pilot: Pilot[Any]) -> str:
    """Once the console has data, press q: the text of the quit dialog that opens."""
    await refreshed(pilot)
    await pilot.press("q")
    app = pilot.app
    modal = await until(pilot, lambda: app.screen if isinstance(app.screen, QuitModal) else None,
                        what="the quit dialog")
    return str(modal.query_one(".dialog-body", Static).render())


async def test_q_with_running_tasks_asks_and_esc_stays(api_server: BackgroundServer, client: httpx.Client) -> None:
    """The embedded console with two running tasks: `q` says how many run and what each choice does; esc stays."""
    for _ in range(2):
        client.post("/api/v1/tasks", json=task_body()).raise_for_status()
    assert len(scripted_agent(client).lease(2)) == 2
    app = console(api_server, quit_mode="embedded")
    async with app.run_test(size=SIZE) as pilot:
        body = await quit_dialog(pilot)
        assert body.startswith("2 tasks are running.")
        assert "Keep running: the coordinator goes on in the background" in body and "`aidd stop` stops it" in body
        assert "agents keep their running tasks" in body
        await pilot.press("q")  # a second q while the dialog is up is ignored
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, QuitModal), what="the dialog to close")
        await pilot.pause(0.2)
        assert app.is_running and app.return_value is None


@pytest.mark.parametrize(("key", "choice"), [("k", QuitChoice.KEEP_RUNNING), ("s", QuitChoice.STOP),
                                             ("enter", QuitChoice.KEEP_RUNNING)])
async def test_each_quit_choice_is_the_apps_result(api_server: BackgroundServer, client: httpx.Client, key: str,
                                                   choice: QuitChoice) -> None:
    """`k` (or enter: keep running has the focus) and `s` end the app with a result `console.launch` acts on."""
    client.post("/api/v1/tasks", json=task_body()).raise_for_status()
    assert scripted_agent(client).lease()
    app = console(api_server, quit_mode="embedded")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitModal), what="the quit dialog")
        await pilot.press(key)
        await until(pilot, lambda: app.return_value is not None, what="the app to exit")
    assert app.return_value is choice


@pytest.mark.parametrize("mode", ["embedded", "attached"])
async def test_q_quits_at_once_with_nothing_running_or_attached(api_server: BackgroundServer,
                                                                client: httpx.Client, mode: str) -> None:
    """Nothing running on the embedded coordinator, or a console attached with --attach (tasks running or not):
    `q` quits at once and stops what the console runs."""
    if mode == "attached":
        client.post("/api/v1/tasks", json=task_body()).raise_for_status()
        assert scripted_agent(client).lease()
    app = console(api_server, quit_mode=mode)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("q")
        await until(pilot, lambda: app.return_value is not None, what="the app to exit")
        assert not isinstance(app.screen, QuitModal)
    assert app.return_value is QuitChoice.STOP


async def test_q_on_the_background_coordinator_asks_even_with_nothing_running(api_server: BackgroundServer) -> None:
    """Attached to the state directory's background coordinator, `q` always asks; leaving it running is the
    default."""
    app = console(api_server, quit_mode="background")
    async with app.run_test(size=SIZE) as pilot:
        body = await quit_dialog(pilot)
        assert body.startswith("The background coordinator runs 0 tasks.") and "Leave it running" in body
        await pilot.press("enter")
        await until(pilot, lambda: app.return_value is not None, what="the app to exit")
    assert app.return_value is QuitChoice.KEEP_RUNNING
