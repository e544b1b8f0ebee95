"""The Queues pane: the overview: tasks by status, cluster totals, and one row per service queue."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from console import keys
from console.query import STATUSES, TaskQuery
from console.screens.detail import TaskDetailScreen
from console.screens.live import GPU_TOTALS, PaneScreen
from console.text import gigabytes
from console.widgets.failure_table import FailureTable
from console.widgets.queue_table import QueueTable

FAILURES_SHOWN = 12


def _n(value: Any) -> str:
    return f"{int(value or 0):,}".replace(",", " ")


def _retention(window: dict[str, Any] | None) -> str:
    """How long finished tasks are kept (the coordinator's task_retention_days), or nothing from an older one."""
    if not window or "task_days" not in window:
        return ""
    days = float(window["task_days"])
    return " · kept forever" if days <= 0 else f" · kept {days:g} days"


class QueuesScreen(PaneScreen):
    """Per-service queues with the totals an operator checks first."""

    MODE = "queues"
    GPUS_FROM_DATA = True
    BINDINGS: ClassVar[list[BindingType]] = [*keys.QUEUES]

    def compose_pane(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield QueueTable()
        yield Static(Text("Recent failures (enter: detail)", style="bold"), classes="summary section")
        yield FailureTable()

    async def fetch(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        client = self.console.client
        dashboard, failures = await asyncio.gather(
            client.dashboard(), client.list_tasks(page=1, page_size=FAILURES_SHOWN, sort="-finished_at",
                                                  status=["failed", "timeout"]))
        return dashboard, failures.get("items") or []

    def apply(self, fetched: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        data, failures = fetched
        palette = self.console.palette
        self.query_one(FailureTable).show(failures, palette, self.console.options.now())
        by_status = (data.get("tasks") or {}).get("by_status") or {}
        line = Text("Tasks    ", style="bold")
        shown = [s for s in STATUSES if by_status.get(s) or s in ("pending", "running", "failed")]
        for status in shown:
            line.append(f"{status} ")
            line.append(_n(by_status.get(status)), palette.status(status))
            line.append(" · ")
        line.append(f"total {_n((data.get('tasks') or {}).get('total'))}")
        line.append(_retention(data.get("retention")), palette.style("muted"))
        w = data.get("workers") or {}
        self.show_gpus({key: int(w.get(key) or 0) for key in GPU_TOTALS})
        counts = w.get("by_status") or {}
        line.append("\nWorkers  ", style="bold")
        for status in ("online", "draining", "offline"):
            if counts.get(status) or status == "online":
                line.append(f"{status} ")
                line.append(_n(counts.get(status)), palette.status(status))
                line.append(" · ")
        gpus = f"GPUs {_n(w.get('allocated_gpus'))}/{_n(w.get('gpus'))} allocated, {_n(w.get('busy_gpus'))} busy"
        line.append(f"CPU {float(w.get('used_cpu') or 0):.0f}/{float(w.get('cpu_cores') or 0):.0f}"
                    f" · mem {gigabytes(w.get('used_memory_gb'))}/{gigabytes(w.get('memory_gb'))} · {gpus}"
                    f" · slots {_n(w.get('running'))}/{_n(w.get('slots'))}")
        self.query_one("#summary", Static).update(line)
        queues = data.get("queues") or []
        self.query_one(QueueTable).show(queues, palette)
        if not queues:
            self.query_one("#summary", Static).update(line + Text(
                "\n\nNo queues yet: submit a task with n, or start with --demo.", style=palette.style("muted")))

    def on_failure_table_failure_chosen(self, message: FailureTable.FailureChosen) -> None:
        self.app.push_screen(TaskDetailScreen(message.task_id))

    def on_queue_table_service_chosen(self, message: QueueTable.ServiceChosen) -> None:
        self.console.show_tasks(TaskQuery(service=(message.service,)))

    def action_service_tasks(self) -> None:
        key = self.query_one(QueueTable).cursor_key
        if key:
            self.console.show_tasks(TaskQuery(service=(key,)))
