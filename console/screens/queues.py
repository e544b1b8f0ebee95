"""The Queues pane: the overview: tasks by status, cluster totals, and one row per service queue; `p` pauses or
resumes a service, `m` sets its running limit."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from aiddclient.client import ApiError
from aiddclient.views import Dashboard, Retention, ServiceView, TaskView
from console import keys
from console.actions import plural
from console.query import STATUSES, TaskQuery
from console.screens.confirm import ConfirmModal
from console.screens.detail import TaskDetailScreen
from console.screens.limit import ServiceLimitModal
from console.screens.live import PaneScreen
from console.text import gigabytes, plain
from console.widgets.failure_table import FailureTable
from console.widgets.queue_table import QueueTable

FAILURES_SHOWN = 12


def _n(value: int | None) -> str:
    return f"{int(value or 0):,}".replace(",", " ")


def _retention(window: Retention | None) -> str:
    """How long finished tasks are kept (the coordinator's task_retention_days), or nothing from an older one."""
    if window is None or window.task_days is None:
        return ""
    days = float(window.task_days)
    return " · kept forever" if days <= 0 else f" · kept {days:g} days"


class QueuesScreen(PaneScreen):
    """Per-service queues with the totals an operator checks first."""

    MODE = "queues"
    GPUS_FROM_DATA = True
    BINDINGS: ClassVar[list[BindingType]] = [*keys.QUEUES]

    def __init__(self, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.services: dict[str, ServiceView] = {}
        """The service registry as last polled: name -> paused, limit, running."""

    def compose_pane(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield QueueTable()
        yield Static(Text("Recent failures (enter: detail)", style="bold"), classes="summary section")
        yield FailureTable()

    async def fetch(self) -> tuple[Dashboard, tuple[TaskView, ...], list[ServiceView]]:
        client = self.console.client
        dashboard, failures, services = await asyncio.gather(
            client.dashboard(), client.tasks(page=1, page_size=FAILURES_SHOWN, sort="-finished_at",
                                             status=["failed", "timeout"]), client.services())
        return dashboard, failures.items, services

    def apply(self, fetched: tuple[Dashboard, tuple[TaskView, ...], list[ServiceView]]) -> None:
        data, failures, services = fetched
        self.services = {s.name: s for s in services}
        palette = self.console.palette
        self.query_one(FailureTable).show(failures, palette, self.console.options.now())
        by_status = data.tasks.by_status
        line = Text("Tasks    ", style="bold")
        shown = [s for s in STATUSES if by_status.get(s) or s in ("pending", "running", "failed")]
        for status in shown:
            line.append(f"{status} ")
            line.append(_n(by_status.get(status)), palette.status(status))
            line.append(" · ")
        line.append(f"total {_n(data.tasks.total)}")
        line.append(_retention(data.retention), palette.style("muted"))
        w = data.workers
        self.show_gpus(w.gpu_counts)
        counts = w.by_status
        line.append("\nWorkers  ", style="bold")
        for status in ("online", "draining", "offline"):
            if counts.get(status) or status == "online":
                line.append(f"{status} ")
                line.append(_n(counts.get(status)), palette.status(status))
                line.append(" · ")
        gpus = f"GPUs {_n(w.allocated_gpus)}/{_n(w.gpus)} allocated, {_n(w.busy_gpus)} busy"
        line.append(f"CPU {w.used_cpu:.0f}/{w.cpu_cores:.0f} · mem {gigabytes(w.used_memory_gb)}/"
                    f"{gigabytes(w.memory_gb)} · {gpus} · slots {_n(w.running)}/{_n(w.slots)}")
        self.query_one("#summary", Static).update(line)
        queues = data.queues
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

    def _service_at_cursor(self) -> ServiceView | None:
        name = self.query_one(QueueTable).cursor_key
        if not name:
            self.notify("No service under the cursor.", severity="warning")
            return None
        return self.services.get(name, ServiceView(name))

    def action_pause_service(self) -> None:
        service = self._service_at_cursor()
        if service is not None:
            self._pause_or_resume(service)

    def action_service_limit(self) -> None:
        service = self._service_at_cursor()
        if service is not None:
            self._set_limit(service)

    @work(group="action", exit_on_error=False)
    async def _pause_or_resume(self, service: ServiceView) -> None:
        name, paused = plain(service.name, 60), service.paused
        verb = "Resume" if paused else "Pause"
        pending = service.pending
        body = (f"Resume {name}? Its {plural(pending)} pending start as workers take them." if paused else
                f"Pause {name}? Its {plural(pending)} pending wait (running ones go on) until resumed with p.")
        if not await self.app.push_screen_wait(ConfirmModal(f"{verb} service", body, f"{verb} {name}")):
            return
        try:
            await self.console.client.change_service(service.name, paused=not paused)
        except ApiError as exc:
            self.notify(f"{verb} failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"{name}: {'resumed' if paused else 'paused'}", markup=False)
        self.refresh_now()

    @work(group="action", exit_on_error=False)
    async def _set_limit(self, service: ServiceView) -> None:
        name = plain(service.name, 60)
        chosen = await self.app.push_screen_wait(ServiceLimitModal(name, service.max_running))
        if chosen is None:
            return
        try:
            result = await self.console.client.change_service(service.name, max_running=chosen[0])
        except ApiError as exc:
            self.notify(f"Setting the limit failed: {exc}", severity="error", markup=False)
            return
        limit = ServiceView.from_json(result).limit
        self.notify(f"{name}: {'no limit' if limit is None else f'at most {limit} running'}", markup=False)
        self.refresh_now()
