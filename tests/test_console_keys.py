"""The console in the hand: moving keys in every table, the palette's actions by name, `:` and a task id's start,
the cursor that stays on its task, `/` in every pane, the submit dialog's group, on a real API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from textual.app import Notify
from textual.command import CommandList, CommandPalette
from textual.message import Message
from textual.pilot import Pilot

from console.screens.confirm import ConfirmModal
from console.screens.detail import TaskDetailScreen
from console.screens.filter import FilterModal, RowFilterModal
from console.screens.submit import SubmitModal
from console.widgets.batch_table import BatchTable
from console.widgets.keyed_table import KeyedTable
from console.widgets.queue_table import QueueTable
from console.widgets.task_table import TaskTable
from console.widgets.worker_table import WorkerTable
from coordinator.schemas import TaskSpec
from coordinator.server import BackgroundServer
from tests.consolekit import console, refreshed, scripted_agent, until
from tests.support.tasks import task_body

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


async def pane(pilot: Pilot[Any], key: str, table: type[KeyedTable]) -> KeyedTable:
    """Switch to a pane and wait for its data; its table, focused."""
    await refreshed(pilot)
    await pilot.press(key)
    screen = await refreshed(pilot)
    found = screen.query_one(table)
    found.focus()
    await pilot.pause()
    return found


async def palette(pilot: Pilot[Any], text: str, expected: str) -> None:
    """Open the palette with `:`, type `text`, wait until the first entry holds `expected` and take it."""
    await pilot.press("colon")
    found = await until(pilot, lambda: pilot.app.screen if isinstance(pilot.app.screen, CommandPalette) else None,
                        what="the palette")
    await pilot.press(*text)

    def first() -> str:
        options = found.query_one(CommandList).options
        return str(options[0].prompt) if options else ""
    await until(pilot, lambda: expected.lower() in first().lower(), what=f"{expected!r} first in the palette")
    await pilot.pause(0.3)  # the list settles (a later search may still reorder it)
    await until(pilot, lambda: expected.lower() in first().lower(), what=f"{expected!r} first in the palette")
    await pilot.press("enter")


@pytest.mark.parametrize(("key", "table", "rows"), [("1", QueueTable, 3), ("2", WorkerTable, 3),
                                                    ("3", TaskTable, 3), ("4", BatchTable, 3)])
async def test_j_k_g_G_home_end_move_in_every_table(api_server: BackgroundServer, client: httpx.Client, key: str,
                                                    table: type[KeyedTable], rows: int) -> None:
    for service in ("admet", "docking", "inference"):
        client.post("/api/v1/tasks", json={"name": service, "tasks": [task_body(service=service)]})
    for host in ("node-a", "node-b", "node-c"):
        scripted_agent(client, hostname=host)
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        shown = await pane(pilot, key, table)
        assert shown.row_count == rows and shown.cursor_row == 0
        moves = [("j", 1), ("j", 2), ("k", 1), ("G", rows - 1), ("g", 0), ("end", rows - 1), ("home", 0)]
        for pressed, row in moves:
            await pilot.press(pressed)
            await pilot.pause()
            assert shown.cursor_row == row, f"after {pressed}"


async def test_the_palette_finds_drain_cancel_and_retry_by_name(api_server: BackgroundServer,
                                                                 client: httpx.Client) -> None:
    """The README's promise: every action by name. From the Tasks pane, `cancel` asks to cancel the task under
    the cursor; `drain` goes to the Workers pane and asks to drain its worker; the Batches pane's retry too."""
    task = client.post("/api/v1/tasks", json=task_body(name="dock me")).json()
    scripted_agent(client, hostname="gpu-07")
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await pane(pilot, "3", TaskTable)
        names = [c.title.lower() for c in app.get_system_commands(app.screen)]
        assert all(any(word in n for n in names) for word in ("cancel", "retry", "requeue", "drain", "sort"))
        await palette(pilot, "cancel", "Cancel")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmModal) else None,
                            what="the cancel confirmation")
        assert task["id"][:8] in modal._body and "Cancel" in modal._title
        await pilot.press("escape")
        await palette(pilot, "drain", "Workers: Drain")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmModal) else None,
                            what="the drain confirmation")
        assert app.current_mode == "workers" and "Drain gpu-07" in modal._body
        await pilot.press("escape")
        await palette(pilot, "retry failed", "Batches: Retry failed")
        await until(pilot, lambda: app.current_mode == "batches", what="the Batches pane")


async def test_colon_and_the_start_of_a_task_id_opens_it(api_server: BackgroundServer) -> None:
    """`:` then 8 characters of an id opens that task; a start two ids share says which (and opens none)."""
    shared = [uuid.UUID("abcd0001-0000-4000-8000-000000000000"), uuid.UUID("abcd0002-0000-4000-8000-000000000000")]
    spec = TaskSpec.model_validate(task_body())
    api_server.call(lambda: api_server.coordinator.tasks.submit([spec, spec], ids=shared))
    toasts: list[str] = []

    def hook(message: Message) -> None:
        if isinstance(message, Notify):
            toasts.append(message.notification.message)
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await refreshed(pilot)
        await palette(pilot, "abcd0002", "Go to task abcd0002")
        detail = await until(pilot, lambda: app.screen if isinstance(app.screen, TaskDetailScreen) else None,
                             what="the task's detail")
        assert detail.task_id == str(shared[1])
        await pilot.press("escape")
        await palette(pilot, "abcd", "Go to task abcd")
        await until(pilot, lambda: any("several ids" in t for t in toasts), what="the candidates")
        said = next(t for t in toasts if "several ids" in t)
        assert all(str(i) in said for i in shared) and not isinstance(app.screen, TaskDetailScreen)


async def test_the_cursor_stays_on_its_task_when_new_tasks_push_it_down(api_server: BackgroundServer,
                                                                         client: httpx.Client) -> None:
    ids = [client.post("/api/v1/tasks", json=task_body(name=f"old {i}")).json()["id"] for i in range(3)]
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        table = await pane(pilot, "3", TaskTable)
        await pilot.press("j")  # newest first: the second row is the middle task
        await pilot.pause()
        assert table.cursor_key == ids[1]
        for i in range(4):
            client.post("/api/v1/tasks", json=task_body(name=f"new {i}")).raise_for_status()
        await until(pilot, lambda: table.row_count == 7, what="the new tasks")
        assert table.cursor_key == ids[1] and table.cursor_row == 5


async def test_slash_filters_tasks_by_a_smiles_and_a_status_and_workers_by_any_column(
        api_server: BackgroundServer, client: httpx.Client) -> None:
    benzene = client.post("/api/v1/tasks", json=task_body(name="ring", input_params={"smiles": "c1ccccc1"})).json()
    client.post("/api/v1/tasks", json=task_body(name="ethanol", input_params={"smiles": "CCO"})).raise_for_status()
    agent = scripted_agent(client, hostname="dock-01", groups=["default", "docking"])
    scripted_agent(client, hostname="cpu-02")
    [running] = agent.lease()
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        table = await pane(pilot, "3", TaskTable)
        for text, expected in (("c1ccccc1", benzene["id"]), ("running", running["task_id"]),
                               ("dock-01", running["task_id"])):
            await pilot.press("slash")
            modal = await until(pilot, lambda: app.screen if isinstance(app.screen, FilterModal) else None)
            modal.query_one("#text").value = text  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda t=text: app.screen.view.query.text == t and not app.screen.polling  # type: ignore[attr-defined]
                        and table.row_count == 1, what=f"the tasks holding {text!r}")
            assert table.cursor_key == expected
        workers = await pane(pilot, "2", WorkerTable)
        assert workers.row_count == 2
        await pilot.press("slash")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, RowFilterModal) else None)
        await pilot.press(*"docking", "enter")  # a group: only in the Groups column
        await until(pilot, lambda: workers.row_count == 1, what="only the docking worker")
        assert workers.cursor_key == f"w:{agent.id}"
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, RowFilterModal))
        await pilot.press("ctrl+u", "enter")
        await until(pilot, lambda: workers.row_count == 2, what="every worker again")


async def test_slash_filters_tasks_by_why_they_wait(api_server: BackgroundServer, client: httpx.Client) -> None:
    """The filter's reason codes are the API's: only the tasks waiting for that reason stay; an unknown code is
    named in a notice and left out."""
    scripted_agent(client, hostname="cpu-01")  # serves group `default`
    stranded = client.post("/api/v1/tasks", json=task_body(name="stranded", group="nobody")).json()
    client.post("/api/v1/tasks", json=task_body(name="served")).raise_for_status()
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        table = await pane(pilot, "3", TaskTable)
        await until(pilot, lambda: table.row_count == 2, what="both tasks")
        await pilot.press("slash")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, FilterModal) else None)
        modal.query_one("#reason").value = "no_group, sleepy"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.view.query.reason == ("no_group",)  # type: ignore[attr-defined]
                    and not app.screen.polling and table.row_count == 1, what="only the stranded task")  # type: ignore[attr-defined]
        assert table.cursor_key == stranded["id"]
        assert any("not a reason code: sleepy" in n.message for n in app._notifications)


async def test_the_submit_dialog_offers_a_group_an_online_worker_serves(api_server: BackgroundServer,
                                                                         client: httpx.Client) -> None:
    scripted_agent(client, hostname="gpu-01", groups=["gpu"])
    app = console(api_server)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("n")
        modal = await until(pilot, lambda: app.screen if isinstance(app.screen, SubmitModal) else None)
        await until(pilot, lambda: modal.query_one("#group").value == "gpu",  # type: ignore[attr-defined]
                    what="the served group")
