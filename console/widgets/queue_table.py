"""Per-service queue figures: pending, running, last hour's outcomes, oldest wait, throughput sparkline, and why
its tasks wait."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.message import Message
from textual.widgets import DataTable

from aiddclient.views import QueueStats, ServiceView, WaitingCount
from console import keys
from console.palette import Palette
from console.text import age, cell, number, sparkline
from console.widgets.keyed_table import Column, KeyedTable, Row

SPARK_WIDTH = 24
"""Minutes of throughput history shown (the coordinator keeps 30)."""


def _state(service: ServiceView | None, palette: Palette) -> Text:
    """`paused`, `≤ 4` (its running limit), or nothing."""
    if service is None:
        return Text("")
    if service.paused:
        return Text("paused", style=palette.status("draining"))
    limit = service.limit
    return Text("" if limit is None else f"≤ {limit}", style=palette.status("pending") if service.at_limit else "")


STUCK = frozenset({"no_group", "no_service", "no_labels", "too_big"})
"""Pending reasons no amount of waiting cures: an operator has to start, relabel or resize a worker."""


def waiting_cell(reasons: Sequence[WaitingCount], pending: int, palette: Palette) -> Text:
    """The commonest reason a queue's tasks wait (`no online worker in group `default``; `20 of 32: …` when not
    all of its pending tasks wait for it), and how many other reasons there are; in the warning colour when only
    an operator can cure it. The count is left out when it is the Pending column's: the cell is short of room."""
    if not reasons:
        return Text("")
    top = reasons[0]
    count = top.count
    share = f"{count:,} of {pending:,}: ".replace(",", " ") if count != pending else ""
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    style = palette.style("warning") if top.code in STUCK else palette.style("muted")
    return cell(f"{share}{top.message}{more}", style)


class QueueTable(KeyedTable):
    """One row per service; enter opens the service's tasks."""

    BINDINGS: ClassVar[list[BindingType]] = [*keys.table_enter(keys.QUEUES)]

    @dataclass
    class ServiceChosen(Message):
        """The operator chose a service (enter or click)."""

        service: str

    def __init__(self) -> None:
        super().__init__([Column("service", "Service", 12), Column("state", "State", 8, drop=1),
                          Column("pending", "Pending", 7),
                          Column("running", "Running", 7), Column("succeeded", "Done 1h", 7, drop=2),
                          Column("failed", "Failed 1h", 9), Column("oldest", "Oldest wait", 11),
                          Column("spark", f"Done per minute, {SPARK_WIDTH} min", SPARK_WIDTH, drop=3),
                          Column("rate", "/min", 5, drop=4), Column("waiting", "Why waiting", 16, grow=1)],
                         id="queue-table")

    def show(self, queues: Sequence[QueueStats], services: dict[str, ServiceView], palette: Palette) -> None:
        """Replace the rows with these queue figures; `services` (the registry) says which are paused or
        limited."""
        rows: list[Row] = []
        for q in queues:
            series = [float(v) for v in q.throughput_per_min]
            recent = series[-5:]
            rate = sum(recent) / len(recent) if recent else 0.0
            failed = q.failed_1h
            rows.append((q.service, (
                cell(q.service, "bold", 100),
                _state(services.get(q.service), palette),
                number(q.pending, palette.status("pending") if q.pending else ""),
                number(q.running, palette.status("running") if q.running else ""),
                number(q.succeeded_1h, palette.status("succeeded")),
                number(failed, palette.status("failed") if failed else ""),
                Text(age(q.oldest_pending_s), justify="right"),
                Text(sparkline(series, SPARK_WIDTH).rjust(SPARK_WIDTH, " "), style=palette.style("spark")),
                Text(f"{rate:.1f}", justify="right"),
                waiting_cell(q.waiting, q.pending, palette),
            )))
        self.sync(rows)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.ServiceChosen(str(event.row_key.value)))
