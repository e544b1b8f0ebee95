"""The Workers pane: every host with CPU, memory and per-GPU telemetry; `d` drains or resumes one, `x` removes an
offline one."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from aiddclient.client import ApiError
from aiddclient.views import WorkerView
from aiddwire import CommandKind
from console import keys
from console.actions import plural
from console.query import TaskQuery
from console.screens.confirm import ConfirmModal
from console.screens.live import PaneScreen
from console.text import age, gigabytes, plain, seconds_since
from console.widgets.worker_table import WorkerTable
from coordinator.gpus import count_gpus


class WorkersScreen(PaneScreen):
    """Hosts, their GPUs and their heartbeats."""

    MODE = "workers"
    GPUS_FROM_DATA = True
    BINDINGS: ClassVar[list[BindingType]] = [*keys.WORKERS]

    def compose_pane(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield WorkerTable()

    async def fetch(self) -> list[WorkerView]:
        return await self.console.client.workers()

    def apply(self, data: list[WorkerView]) -> None:
        palette = self.console.palette
        self.query_one(WorkerTable).show(data, palette, self.console.options.now())
        live = [w for w in data if not w.offline]
        counts = {s: sum(1 for w in data if w.status == s) for s in ("online", "draining", "offline")}
        summary = Text()
        for i, (status, count) in enumerate(counts.items()):
            if i:
                summary.append(" · ")
            summary.append(str(count), palette.status(status))
            summary.append(f" {status}")
        cores = sum(w.cpu_cores for w in live)
        used = sum(w.cpu_fraction * w.cpu_cores for w in live)
        mem = sum(w.memory_gb for w in live)
        mem_used = sum(w.used_memory_gb for w in live)
        gpus = count_gpus((g.allocated, g.busy, g.idle) for w in live for g in w.gpus)
        self.show_gpus(gpus)
        running = sum(w.running for w in live)
        slots = sum(w.slots for w in live)
        summary.append(f" · CPU {used:.0f}/{cores:.0f} · mem {gigabytes(mem_used)}/{gigabytes(mem)}"
                       f" · GPUs {gpus['allocated_gpus']}/{gpus['gpus']} allocated, {gpus['busy_gpus']} busy")
        if gpus["idle_gpus"]:
            summary.append(f", {gpus['idle_gpus']} idle", palette.style("meter-mid", bold=True))
        summary.append(f" · slots {running}/{slots}")
        if not data:
            summary.append("\n\nNo workers yet: start one with `aidd-agent --url URL`, or run aidd --local-agent.",
                           palette.style("muted"))
        self.query_one("#summary", Static).update(summary)

    def on_worker_table_worker_chosen(self, message: WorkerTable.WorkerChosen) -> None:
        worker = self.query_one(WorkerTable).by_id.get(message.worker_id)
        self.console.show_tasks(TaskQuery(worker_id=message.worker_id, worker_name=worker.hostname if worker else ""))

    def action_worker_tasks(self) -> None:
        worker = self.query_one(WorkerTable).worker_at_cursor()
        if worker:
            self.console.show_tasks(TaskQuery(worker_id=worker.id, worker_name=worker.hostname))

    def action_remove_worker(self) -> None:
        worker = self.query_one(WorkerTable).worker_at_cursor()
        if worker is None:
            self.notify("No worker under the cursor.", severity="warning")
            return
        self._remove(worker)

    @work(group="action", exit_on_error=False)
    async def _remove(self, worker: WorkerView) -> None:
        host = plain(worker.hostname, 60)
        if not worker.offline:
            self.notify(f"{host} is {worker.status}: only an offline worker can be removed.",
                        severity="warning", markup=False)
            return
        seen = age(seconds_since(worker.last_heartbeat_at, self.console.options.now()))
        body = (f"Remove {host} from the workers? It was last seen {seen} ago. Its tasks keep their history; "
                "if its agent comes back, it registers again.")
        if not await self.app.push_screen_wait(ConfirmModal("Remove worker", body, f"Remove {host}")):
            return
        try:
            await self.console.client.remove_worker(worker.id)
        except ApiError as exc:
            self.notify(f"Remove failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"{host}: removed", markup=False)
        self.refresh_now()

    def action_drain(self) -> None:
        worker = self.query_one(WorkerTable).worker_at_cursor()
        if worker is None:
            self.notify("No worker under the cursor.", severity="warning")
            return
        self._drain_or_resume(worker)

    @work(group="action", exit_on_error=False)
    async def _drain_or_resume(self, worker: WorkerView) -> None:
        host = plain(worker.hostname, 60)
        status = worker.status
        if worker.offline:
            self.notify(f"{host} is offline: there is nothing to drain.", severity="warning", markup=False)
            return
        command = CommandKind.RESUME if status == "draining" else CommandKind.DRAIN
        running = worker.running
        if command == CommandKind.DRAIN:
            body = (f"Drain {host}? It takes no new tasks; its {plural(running)} running "
                    f"{'goes' if running == 1 else 'go'} on to the end. Press d again later to resume it.")
        else:
            body = f"Resume {host}? It starts taking new tasks again."
        if not await self.app.push_screen_wait(ConfirmModal(f"{command.title()} worker", body,
                                                            f"{command.title()} {host}")):
            return
        try:
            await self.console.client.command(worker.id, command)
        except ApiError as exc:
            self.notify(f"{command.title()} failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"{host}: {'draining' if command == 'drain' else 'resumed'}", markup=False)
        self.refresh_now()
