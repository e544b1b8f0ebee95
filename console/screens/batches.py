"""The Batches pane: each batch's progress, throughput and ETA; `r` retries its failed tasks, `e` exports its
results table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from aiddclient.client import ApiError
from aiddclient.views import BatchView
from console import keys
from console.actions import plural
from console.query import TaskQuery
from console.screens.confirm import ConfirmModal
from console.screens.live import PaneScreen
from console.text import plain, short_id
from console.widgets.batch_table import BatchTable

RETRYABLE_END = ["failed", "timeout"]


class BatchesScreen(PaneScreen):
    """Recent batches, newest first."""

    MODE = "batches"
    BINDINGS: ClassVar[list[BindingType]] = [*keys.BATCHES]

    def compose_pane(self) -> ComposeResult:
        yield Static(id="summary", classes="summary")
        yield BatchTable()

    async def fetch(self) -> list[BatchView]:
        return await self.console.client.batches(limit=200)

    def apply(self, data: list[BatchView]) -> None:
        palette = self.console.palette
        table = self.query_one(BatchTable)
        table.show(data, palette, self.console.options.now())
        active = sum(1 for b in data if b.pending + b.running)
        summary = Text(f"{plural(len(data), 'batch').replace('batchs', 'batches')} · {active} in progress")
        summary.append("   bar: ")
        for status in ("succeeded", "failed", "cancelled", "running"):
            summary.append("█", palette.status(status))
            summary.append(f" {status}  " if status != "failed" else " failed/timeout (r retries them)  ")
        summary.append("░", palette.style("meter-track"))
        summary.append(" pending")
        if not data:
            summary.append("\n\nNo batches yet: submit one with n (a file of SMILES, one per line).",
                           palette.style("muted"))
        self.query_one("#summary", Static).update(summary)

    def _cursor_batch(self) -> BatchView | None:
        table = self.query_one(BatchTable)
        key = table.cursor_key
        return table.by_id.get(key) if key else None

    def on_batch_table_batch_chosen(self, message: BatchTable.BatchChosen) -> None:
        batch = self.query_one(BatchTable).by_id.get(message.batch_id)
        self.console.show_tasks(TaskQuery(batch_id=message.batch_id, batch_name=batch.name if batch else ""))

    def action_batch_tasks(self) -> None:
        batch = self._cursor_batch()
        if batch:
            self.console.show_tasks(TaskQuery(batch_id=batch.id, batch_name=batch.name))

    def action_retry_failed(self) -> None:
        batch = self._cursor_batch()
        if batch is None:
            self.notify("No batch under the cursor.", severity="warning")
            return
        self._retry_failed(batch)

    @work(group="action", exit_on_error=False)
    async def _retry_failed(self, batch: BatchView) -> None:
        client = self.console.client
        name = plain(batch.name or f"batch {short_id(batch.id)}", 60)
        try:
            count = (await client.tasks(page=1, page_size=1, batch_id=batch.id, status=RETRYABLE_END)).total
            if not count:
                self.notify(f"Batch {name} has no failed or timed-out tasks to retry.", markup=False)
                return
            body = (f"Retry the {plural(count)} of batch {name!r} that failed or timed out? They go back to "
                    "their queue as pending, with a fresh retry budget.")
            if not await self.app.push_screen_wait(ConfirmModal("Retry failed tasks", body,
                                                                f"Retry {plural(count)}")):
                return
            result = await client.act("retry", filter={"batch_id": batch.id, "status": RETRYABLE_END})
        except ApiError as exc:
            self.notify(f"Retry failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"Retried {plural(result.get('changed', 0))} of batch {name}", markup=False)
        self.refresh_now()

    def action_export(self) -> None:
        batch = self._cursor_batch()
        if batch is None:
            self.notify("No batch under the cursor.", severity="warning")
            return
        self._export(batch)

    @work(group="export", exclusive=True, exit_on_error=False)
    async def _export(self, batch: BatchView) -> None:
        """Stream the batch's results into `results-<batch>.csv` (the writes on a thread: the UI does no I/O)."""
        folder = self.console.options.export_dir or Path.cwd()
        path = folder / f"results-{short_id(batch.id)}.csv"
        try:
            out = await asyncio.to_thread(path.open, "wb")
            try:
                async for chunk in self.console.client.results(batch.id, "csv"):
                    await asyncio.to_thread(out.write, chunk)
            finally:
                await asyncio.to_thread(out.close)
        except (ApiError, OSError) as exc:
            self.notify(f"Export failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"Wrote the results of batch {plain(batch.name or short_id(batch.id), 60)} to {path}",
                    markup=False)
