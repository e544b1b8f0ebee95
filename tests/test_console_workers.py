"""The Workers pane's keys on a real API: `x` removes an offline worker (after asking), never a live one."""

from __future__ import annotations

import httpx
import pytest
from textual.coordinate import Coordinate

from console.screens.confirm import ConfirmModal
from console.widgets.worker_table import WorkerTable
from coordinator.server import BackgroundServer
from tests.consolekit import console, record, refreshed, scripted_agent, until
from tests.test_console_actions import Toasts

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


async def test_x_removes_an_offline_worker_after_asking(api_server: BackgroundServer, client: httpx.Client) -> None:
    scripted_agent(client, "alive-node")
    retired = scripted_agent(client, "retired-node")
    client.delete(f"/api/v1/workers/{retired.id}").raise_for_status()
    toasts = Toasts()
    app = console(api_server)
    async with app.run_test(size=SIZE, message_hook=toasts) as pilot:
        await refreshed(pilot)
        await pilot.press("2")
        await refreshed(pilot)
        table = app.screen.query_one(WorkerTable)
        assert table.worker_at_cursor().hostname == "alive-node"  # type: ignore[union-attr]
        await pilot.press("x")
        await until(pilot, lambda: toasts.saying("alive-node is online: only an offline worker can be removed"),
                    what="the refusal")
        assert not isinstance(app.screen, ConfirmModal)

        await pilot.press("down")  # the offline host comes last
        assert table.worker_at_cursor().hostname == "retired-node"  # type: ignore[union-attr]
        task_column = next(i for i, c in enumerate(table.ordered_columns) if c.key.value == "task")
        assert str(table.get_cell_at(Coordinate(table.cursor_row, task_column))).startswith("last seen ")
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("escape")  # changed its mind: nothing happens
        await pilot.pause()
        assert len(record(api_server, "SELECT id FROM workers")) == 2
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: toasts.saying("retired-node: removed"), what="the removal toast")
        await until(pilot, lambda: len(table.by_id) == 1, what="the row to go")
    assert [r["hostname"] for r in record(api_server, "SELECT hostname FROM workers")] == ["alive-node"]


async def test_read_only_console_has_no_remove_key(api_server: BackgroundServer, client: httpx.Client) -> None:
    retired = scripted_agent(client, "retired-node")
    client.delete(f"/api/v1/workers/{retired.id}").raise_for_status()
    app = console(api_server, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("2")
        await refreshed(pilot)
        await pilot.press("x")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
    assert len(record(api_server, "SELECT id FROM workers")) == 1
