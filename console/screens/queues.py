"""The Queues pane: the overview: tasks by status, cluster totals, and one row per service queue; `p` pauses or
resumes a service, `m` sets its running limit."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from console import keys
from console.actions import plural
from console.query import STATUSES, TaskQuery
from console.screens.confirm import ConfirmModal
from console.screens.detail import TaskDetailScreen
from console.screens.limit import ServiceLimitModal
from console.screens.live import GPU_TOTALS, PaneScreen
from console.text import gigabytes, plain
from console.widgets.failure_table import FailureTable
from console.widgets.queue_table import QueueTable
from coordinator.client import ApiError

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

    def __init__(self, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.services: dict[str, dict[str, Any]] = {}
        """The service registry as last polled: name -> paused, limit, running."""

    def compose_pane(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield QueueTable()
        yield Static(Text("Recent failures (enter: detail)", style="bold"), classes="summary section")
        yield FailureTable()

    async def fetch(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        client = self.console.client
        dashboard, failures, services = await asyncio.gather(
            client.dashboard(), client.list_tasks(page=1, page_size=FAILURES_SHOWN, sort="-finished_at",
                                                  status=["failed", "timeout"]), client.services())
        return dashboard, failures.get("items") or [], services

    def apply(self, fetched: tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]) -> None:
        data, failures, services = fetched
        self.services = {str(s["name"]): s for s in services}
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
        self.query_one(QueueTable).show(queues, self.services, palette)
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

    def _service_at_cursor(self) -> dict[str, Any] | None:
        name = self.query_one(QueueTable).cursor_key
        if not name:
            self.notify("No service under the cursor.", severity="warning")
            return None
        return self.services.get(name, {"name": name, "paused": False, "limit": None, "max_running": None})

    def action_pause_service(self) -> None:
        service = self._service_at_cursor()
        if service is not None:
            self._pause_or_resume(service)

    def action_service_limit(self) -> None:
        service = self._service_at_cursor()
        if service is not None:
            self._set_limit(service)

    @work(group="action", exit_on_error=False)
    async def _pause_or_resume(self, service: dict[str, Any]) -> None:
        name, paused = plain(service["name"], 60), bool(service.get("paused"))
        verb = "Resume" if paused else "Pause"
        pending = int(service.get("pending") or 0)
        body = (f"Resume {name}? Its {plural(pending)} pending start as workers take them." if paused else
                f"Pause {name}? Its {plural(pending)} pending wait (running ones go on) until resumed with p.")
        if not await self.app.push_screen_wait(ConfirmModal(f"{verb} service", body, f"{verb} {name}")):
            return
        try:
            await self.console.client.change_service(service["name"], paused=not paused)
        except ApiError as exc:
            self.notify(f"{verb} failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"{name}: {'resumed' if paused else 'paused'}", markup=False)
        self.refresh_now()

    @work(group="action", exit_on_error=False)
    async def _set_limit(self, service: dict[str, Any]) -> None:
        name = plain(service["name"], 60)
        chosen = await self.app.push_screen_wait(ServiceLimitModal(name, service.get("max_running")))
        if chosen is None:
            return
        try:
            result = await self.console.client.change_service(service["name"], max_running=chosen[0])
        except ApiError as exc:
            self.notify(f"Setting the limit failed: {exc}", severity="error", markup=False)
            return
        limit = result.get("limit")
        self.notify(f"{name}: {'no limit' if limit is None else f'at most {limit} running'}", markup=False)
        self.refresh_now()
