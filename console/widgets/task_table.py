"""One page of tasks: selection mark, id, status, service, type, name, priority, group, tries, age, note."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.message import Message
from textual.widgets import DataTable

from console import keys
from console.palette import Palette
from console.text import age, cell, plain, seconds_since, short_id
from console.widgets.keyed_table import KeyedTable, Row

SORT_COLUMNS = {"status": "status", "service": "service", "name": "name", "priority": "priority",
                "age": "created_at"}
"""Table columns whose header click sorts the list (column key → API sort field)."""


def note(task: dict[str, Any]) -> str:
    """The most useful short fact: progress while running, the error when it failed, else the end reason."""
    status = task.get("status")
    if status == "running" and task.get("progress") is not None:
        return f"{float(task['progress']) * 100:.0f}%"
    if task.get("error"):
        return plain(task["error"], 60)
    if status == "pending" and task.get("retry_count"):
        return f"retry {task['retry_count']} waiting"
    reason = task.get("end_reason")
    return "" if reason in (None, "succeeded", status) else plain(reason)


class TaskTable(KeyedTable):
    """The Tasks pane's table (one page from the server; never every task)."""

    BINDINGS: ClassVar[list[BindingType]] = [*keys.table_enter(keys.TASKS)]

    @dataclass
    class TaskChosen(Message):
        """The operator chose a task (enter or click on the highlighted row)."""

        task_id: str

    @dataclass
    class SortChosen(Message):
        """The operator clicked a sortable column header."""

        sort: str

    def __init__(self) -> None:
        super().__init__([("id", "  ID", 10), ("status", "Status", 9), ("service", "Service", 9),
                          ("type", "Type", 8), ("name", "Name", 25), ("priority", "Pri", 3), ("group", "Group", 7),
                          ("tries", "Try", 4), ("age", "Age", 5), ("note", "Progress / error", 60)], id="task-table")
        self.by_id: dict[str, dict[str, Any]] = {}

    def task_at_cursor(self) -> dict[str, Any] | None:
        """The task under the cursor, if any."""
        key = self.cursor_key
        return self.by_id.get(key) if key else None

    def show(self, tasks: list[dict[str, Any]], selected: set[str], all_selected: bool, palette: Palette,
             now: datetime) -> None:
        """Replace the rows with this page of tasks."""
        self.by_id = {str(t["id"]): t for t in tasks}
        mark_style = palette.style("selected", bold=True)
        rows: list[Row] = []
        for t in tasks:
            tid = str(t["id"])
            status = str(t.get("status"))
            marked = all_selected or tid in selected
            tries = f"{t.get('attempts', 0)}/{int(t.get('max_retries') or 0) + 1}"
            ident = Text(no_wrap=True)
            ident.append("● " if marked else "  ", mark_style)
            ident.append(short_id(tid), palette.style("muted"))
            rows.append((tid, (
                ident,
                cell(status, palette.status(status)),
                cell(t.get("service"), limit=9),
                cell(t.get("task_type"), limit=8),
                cell(t.get("name"), limit=25),
                Text(str(t.get("priority", "")), justify="right"),
                cell(t.get("group"), limit=7),
                cell(tries),
                Text(age(seconds_since(t.get("created_at"), now)), justify="right"),
                cell(note(t), palette.status("failed") if t.get("error") and status != "succeeded" else ""),
            )))
        self.sync(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.TaskChosen(str(event.row_key.value)))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        sort = SORT_COLUMNS.get(str(event.column_key.value))
        if sort:
            self.post_message(self.SortChosen(sort))
