"""The most recent failed or timed-out tasks, with their errors (on the Queues pane)."""

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


class FailureTable(KeyedTable):
    """Newest failures first; enter opens the task."""

    BINDINGS: ClassVar[list[BindingType]] = [*keys.table_enter(keys.FAILURES)]

    @dataclass
    class FailureChosen(Message):
        """The operator chose a failed task (enter or click)."""

        task_id: str

    def __init__(self) -> None:
        super().__init__([Column("ago", "Ended", 5), Column("id", "ID", 8), Column("status", "Status", 9, drop=1),
                          Column("service", "Service", 10, drop=2), Column("name", "Name", 24),
                          Column("error", "Error", 20, grow=1)], id="failure-table")

    def show(self, tasks: Sequence[TaskView], palette: Palette, now: datetime) -> None:
        """Replace the rows with these failed tasks."""
        rows: list[Row] = []
        for t in tasks:
            rows.append((t.id, (
                Text(age(seconds_since(t.finished_at, now)), justify="right"),
                cell(short_id(t.id), palette.style("muted")),
                cell(t.status, palette.status(t.status)),
                cell(t.service, limit=14),
                cell(t.name, limit=200),
                cell(plain(t.error or t.end_reason or "", 300), palette.status("failed")),
            )))
        self.sync(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.FailureChosen(str(event.row_key.value)))
