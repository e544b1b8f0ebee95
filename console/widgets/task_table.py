"""One page of tasks: selection mark, id, status, service, type, name, priority, group, worker, GPUs, tries, age,
and a note (progress, error, or why it waits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.message import Message
from textual.widgets import DataTable

from aiddclient.views import TaskView
from console import keys
from console.palette import Palette
from console.text import age, cell, plain, seconds_since, short_id
from console.widgets.keyed_table import Column, KeyedTable, Row

SORT_COLUMNS = {"status": "status", "service": "service", "name": "name", "priority": "priority",
                "age": "created_at"}
"""Table columns whose header click sorts the list (column key → API sort field)."""
COLUMNS = [
    Column("id", "  ID", 10), Column("status", "Status", 9), Column("service", "Service", 9, drop=5),
    Column("type", "Type", 8, drop=9), Column("name", "Name", 22, grow=1), Column("priority", "Pri", 4, drop=6),
    Column("group", "Group", 7, drop=8), Column("worker", "Worker", 12, drop=4), Column("gpus", "GPU", 4, drop=7),
    Column("tries", "Try", 4, drop=10), Column("age", "Age", 5, drop=3),
    Column("note", "Why / progress / error", 22, grow=2),
]
"""Left to right; on a narrow terminal the tries go first, then type, group, GPUs, priority, service, worker
and age (80 columns keep id, status, name, age and the note); a wide one shares the rest between the name
and the note (why a pending task waits, a running one's progress, a failed one's error)."""


def sort_labels(sort: str, descending: bool) -> dict[str, str]:
    """Column headers with the sort arrow on the sorted column (`Age ▲` when newest first: ages ascend)."""
    labels = {c.key: c.label for c in COLUMNS if c.key in SORT_COLUMNS}
    for key, field in SORT_COLUMNS.items():
        if field == sort:
            ascending = not descending if key != "age" else descending
            labels[key] = f"{labels[key]} {'▲' if ascending else '▼'}"
    return labels


def note(task: TaskView) -> str:
    """The most useful short fact: progress while running, the error when it failed, else the end reason."""
    status = task.status
    if status == "running" and task.progress is not None:
        return f"{float(task.progress) * 100:.0f}%"
    if task.error:
        return plain(task.error, 200)
    if status == "pending" and task.pending_reason:
        return plain(task.pending_reason.message, 200)
    if status == "pending" and task.retry_count:
        return f"retry {task.retry_count} waiting"
    reason = task.end_reason
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
        super().__init__(COLUMNS, id="task-table")
        self.by_id: dict[str, TaskView] = {}

    def task_at_cursor(self) -> TaskView | None:
        """The task under the cursor, if any."""
        key = self.cursor_key
        return self.by_id.get(key) if key else None

    def show(self, tasks: Sequence[TaskView], selected: set[str], all_selected: bool, palette: Palette,
             now: datetime) -> None:
        """Replace the rows with this page of tasks."""
        self.by_id = {t.id: t for t in tasks}
        mark_style = palette.style("selected", bold=True)
        rows: list[Row] = []
        for t in tasks:
            tid = t.id
            status = t.status
            marked = all_selected or tid in selected
            tries = f"{t.attempts}/{t.max_retries + 1}"
            ident = Text(no_wrap=True)
            ident.append("● " if marked else "  ", mark_style)
            ident.append(short_id(tid), palette.style("muted"))
            rows.append((tid, (
                ident,
                cell(status, palette.status(status)),
                cell(t.service, limit=9),
                cell(t.task_type, limit=8),
                cell(t.name, limit=200),
                Text(str(t.priority), justify="right"),
                cell(t.group, limit=7),
                cell(t.worker_hostname or "", limit=12),
                cell(",".join(str(g) for g in t.gpus)),
                cell(tries),
                Text(age(seconds_since(t.created_at, now)), justify="right"),
                cell(note(t), palette.status("failed") if t.error and status != "succeeded" else ""),
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
