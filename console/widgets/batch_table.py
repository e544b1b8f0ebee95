"""Batches with a progress bar (succeeded / failed / running / pending), throughput and ETA."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.message import Message
from textual.widgets import DataTable

from aiddclient.views import BatchView
from console import keys
from console.palette import Palette
from console.text import MISSING, age, cell, number, seconds_since, short_id
from console.widgets.keyed_table import Column, KeyedTable, Row

BAR_WIDTH = 20


def batch_rate(batch: BatchView) -> float:
    """Tasks finished per minute over the last five minutes."""
    return batch.done_5m / 5.0


def batch_eta(batch: BatchView) -> float | None:
    """Seconds until the batch is done at the current rate (None: done, or no progress to extrapolate)."""
    left = batch.pending + batch.running
    rate = batch_rate(batch)
    if left == 0 or rate <= 0:
        return None
    return left / rate * 60


class BatchTable(KeyedTable):
    """One row per batch, newest first."""

    BINDINGS: ClassVar[list[BindingType]] = [*keys.table_enter(keys.BATCHES)]

    @dataclass
    class BatchChosen(Message):
        """The operator chose a batch (enter or click)."""

        batch_id: str

    def __init__(self) -> None:
        super().__init__([Column("id", "ID", 8), Column("name", "Batch", 22, grow=1),
                          Column("progress", "Progress", BAR_WIDTH, drop=1), Column("pct", "Done", 4),
                          Column("eta", "ETA", 5, drop=4), Column("rate", "/min", 5, drop=5),
                          Column("succeeded", "OK", 6), Column("failed", "Fail", 5),
                          Column("cancelled", "Canc", 5, drop=6), Column("running", "Run", 5, drop=2),
                          Column("pending", "Pend", 6, drop=3), Column("created", "Age", 5, drop=7)],
                         id="batch-table")
        self.by_id: dict[str, BatchView] = {}

    def show(self, batches: list[BatchView], palette: Palette, now: datetime) -> None:
        """Replace the rows with these batches."""
        self.by_id = {b.id: b for b in batches}
        rows: list[Row] = []
        for b in batches:
            total, ok, failed, cancelled = b.total, b.succeeded, b.failed, b.cancelled
            running, pending = b.running, b.pending
            done = ok + failed + cancelled
            eta = batch_eta(b)
            left = pending + running
            rows.append((b.id, (
                cell(short_id(b.id), palette.style("muted")),
                cell(b.name or f"batch {short_id(b.id)}", "bold", 200),
                palette.segments([(ok, "succeeded"), (failed, "failed"), (cancelled, "cancelled"),
                                  (running, "running")], total, BAR_WIDTH),
                Text(f"{done * 100 // total if total else 100}%", justify="right"),
                Text("done" if left == 0 else age(eta) if eta is not None else MISSING, justify="right"),
                Text(f"{batch_rate(b):.1f}", justify="right"),
                number(ok, palette.status("succeeded")),
                number(failed, palette.status("failed") if failed else ""),
                number(cancelled, palette.status("cancelled") if cancelled else ""),
                number(running, palette.status("running") if running else ""),
                number(pending, palette.status("pending") if pending else ""),
                Text(age(seconds_since(b.created_at, now)), justify="right"),
            )))
        self.sync(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.BatchChosen(str(event.row_key.value)))
