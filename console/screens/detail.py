"""Task detail: why it waits, parameters, attempts, worker, result or error, its timeline, and a live tail of the
log."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, RichLog, Static

from aiddclient.client import ApiError
from aiddclient.views import GpuView, TaskView
from console import keys
from console.actions import Target, TaskActionKeys, run_task_action, task_label
from console.screens.live import LiveScreen
from console.text import MISSING, age, file_size, gigabytes, plain, seconds_since, short_id
from coordinator.states import DROPPED_STREAM
from toolkit.inputs import COLUMNS, ROWS

LOG_BATCH = 1000
LOG_KEEP = 5000
PRIORITY_NAMES = {3: "high", 2: "medium", 1: "low"}
TIMELINE_CATCH_UP_S = 10.0
"""How long after the task changed its timeline is read again at each refresh: a new pending reason joins the
timeline once it has held for the leader's 2 s (`coordinator.reasonhistory.SETTLE_S`) and a tick (with room for
a loaded machine)."""


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


SHOWN_MOLECULES = 50
SHOWN_COLUMNS = 6
"""Result columns shown beside each molecule's name, SMILES and error (`aidd results` exports them all)."""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(plain(v, 30) for v in value)
    return plain(value, 30) if value is not None else ""


def molecule_table(result: dict[str, Any], batch_id: str | None, muted: Any, failed: Any) -> RenderableType:
    """A per-molecule result (the chem pack's `rows`) as a table: a row per molecule with its name, SMILES, error
    and the first result columns; a line says what is left out."""
    rows = [r for r in result[ROWS] if isinstance(r, dict)]
    declared = result.get(COLUMNS)
    if not isinstance(declared, list):
        declared = list(dict.fromkeys(k for r in rows for k in r))
    others = [str(c) for c in declared if c not in ("name", "smiles", "error", "canonical_smiles")]
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    for column in ("name", "smiles", *others[:SHOWN_COLUMNS], "error"):
        table.add_column(column, no_wrap=True, max_width=24 if column == "smiles" else None)
    for row in rows[:SHOWN_MOLECULES]:
        table.add_row(Text(_cell(row.get("name"))), Text(plain(row.get("smiles"), 24)),
                      *(Text(_cell(row.get(c))) for c in others[:SHOWN_COLUMNS]),
                      Text(_cell(row.get("error")), style=failed))
    errors = sum(1 for r in rows if r.get("error"))
    note = f"{len(rows)} molecules, {errors} with an error"
    if len(rows) > SHOWN_MOLECULES:
        note += f"; the first {SHOWN_MOLECULES} shown"
    if len(others) > SHOWN_COLUMNS:
        note += f"; {len(others) - SHOWN_COLUMNS} more columns"
    if batch_id:
        note += f" · `aidd results --batch {short_id(batch_id)}` exports the table"
    return Group(table, Text(note, style=muted))


class TaskDetailScreen(TaskActionKeys, LiveScreen):
    """One task, refreshed live; its log is followed with `logs(after=next)`."""

    BINDINGS: ClassVar[list[BindingType]] = [*keys.DETAIL]

    def __init__(self, task_id: str, log_maximised: bool = False) -> None:
        super().__init__()
        self.task_id = task_id
        self.record: TaskView | None = None
        self._next_line = 0
        self._attempt: str | None = None
        self._hosts: dict[str, str] = {}
        self._log_maximised = log_maximised
        self._files: dict[str, Any] | None = None
        self._files_seen: tuple[Any, ...] = ()
        self._events: list[dict[str, Any]] = []
        self._events_seen: tuple[Any, ...] = ()
        self._events_changed = -TIMELINE_CATCH_UP_S

    def compose(self) -> ComposeResult:
        yield Static(id="title", classes="summary")
        yield from self.compose_banners()
        with Horizontal(id="detail"):
            with VerticalScroll(id="facts"):
                yield Static(id="card")
                yield Static(id="attempts")
                yield Static(id="outcome")
                yield Static(id="timeline")
                yield Static(id="files")
            yield RichLog(id="log", max_lines=LOG_KEEP, wrap=False, markup=False, highlight=False,
                          auto_scroll=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.set_class(self._log_maximised, "-log-only")
        self.query_one("#log", RichLog).border_title = "Log (following)"

    async def fetch(self) -> tuple[TaskView, dict[str, Any]]:
        client = self.console.client
        task = await client.task(self.task_id)
        logs = await client.logs(self.task_id, after=self._next_line, limit=LOG_BATCH)
        seen = (task.status, task.attempts)
        if (task.input_files or task.outputs) and seen != self._files_seen:
            self._files = await client.task_files(self.task_id)  # files change only as attempts end
            self._files_seen = seen
        changed = (task.updated_at, task.status, task.attempts, task.pending_reason)
        if changed != self._events_seen:  # the timeline moves only when the task does, or just after
            self._events_seen, self._events_changed = changed, time.monotonic()
        if time.monotonic() - self._events_changed <= TIMELINE_CATCH_UP_S:
            self._events = (await client.timeline(self.task_id)).get("events") or []
        worker = task.worker_id
        if worker and task.worker_hostname:
            self._hosts[worker] = task.worker_hostname
        if worker and worker not in self._hosts:
            try:
                self._hosts[worker] = (await client.worker(worker)).hostname or short_id(worker)
            except ApiError:
                self._hosts[worker] = short_id(worker)
        return task, logs

    def apply(self, data: tuple[TaskView, dict[str, Any]]) -> None:
        task, logs = data
        self.record = task
        self._show_task(task)
        lines = logs.get("lines") or []
        if lines:
            self._write_lines(lines)
            self._next_line = int(logs.get("next") or self._next_line)
            if len(lines) >= LOG_BATCH:
                self.refresh_now()  # more is waiting: fetch it as soon as this poll is done
        elif not self._next_line and not self.query_one("#log", RichLog).lines:
            self.query_one("#log", RichLog).write(Text("(no log lines yet)", style=self.console.palette.style("muted")))

    def rerender(self) -> None:
        if self.record is not None:
            self._show_task(self.record)

    def _write_lines(self, lines: list[dict[str, Any]]) -> None:
        log = self.query_one("#log", RichLog)
        palette = self.console.palette
        if self._next_line == 0 and log.lines:
            log.clear()
        for line in lines:
            attempt = str(line.get("attempt_id") or "")
            if attempt != self._attempt:
                self._attempt = attempt
                number = self._attempt_number(attempt)
                log.write(Text(f"── attempt {number} ({short_id(attempt)}) ──", style=palette.style("muted")))
            stream = line.get("stream")
            style = palette.status("failed") if stream == "stderr" else palette.style("warning") \
                if stream == DROPPED_STREAM else ""
            log.write(Text(plain(line.get("line")), style=style))

    def _attempt_number(self, attempt_id: str) -> str:
        for a in self.record.attempt_history if self.record else ():
            if a.id == attempt_id:
                return str(a.number)
        return "?"

    def _show_task(self, t: TaskView) -> None:
        palette = self.console.palette
        now = self.console.options.now()
        status = t.status
        title = Text()
        title.append("Task ", "bold")
        title.append(t.id, palette.style("muted"))
        title.append("  ")
        title.append(status, palette.status(status))
        title.append("  " + plain(t.name or "(no name)", 80), "bold")
        self.query_one("#title", Static).update(title)
        self.query_one("#card", Static).update(self._card(t, now))
        self.query_one("#attempts", Static).update(self._attempts(t, now))
        self.query_one("#outcome", Static).update(self._outcome(t))
        self.query_one("#timeline", Static).update(self._timeline(now))
        files = self.query_one("#files", Static)
        files.display = bool(self._files)
        files.update(self._files_view())

    def _card(self, t: TaskView, now: Any) -> RenderableType:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        res = t.resources
        worker = t.worker_id
        rows = [
            ("service", f"{plain(t.service)} / {plain(t.task_type)}"),
            ("priority", f"{t.priority} ({PRIORITY_NAMES.get(t.priority, 'custom')})"),
            ("group", plain(t.group) + (f"  labels {','.join(plain(x) for x in t.labels)}" if t.labels else "")),
            ("resources", f"cpu {res.cpu} · mem {res.memory_gb}G · gpu {res.gpu}"
                          + (f" · gpu mem {res.gpu_memory_gb}G" if res.gpu_memory_gb else "")),
            ("attempts", f"{t.attempts} (retries used {t.retry_count}/{t.max_retries}, timeout {t.timeout_s}s)"),
            ("worker", (self._hosts.get(worker, short_id(worker)) if worker else MISSING)
             + (f"  GPUs {list(t.gpus)}" if t.gpus else "")),
            ("created", f"{age(seconds_since(t.created_at, now))} ago"),
            ("started", f"{age(seconds_since(t.started_at, now))} ago" if t.started_at else MISSING),
            ("finished", f"{age(seconds_since(t.finished_at, now))} ago" if t.finished_at else MISSING),
        ]
        if t.pending_reason:
            rows.insert(0, ("waiting", plain(t.pending_reason.message)))
        if t.batch_id:
            rows.append(("batch", short_id(t.batch_id)))
        if t.progress is not None and t.status == "running":
            rows.append(("progress", f"{float(t.progress) * 100:.0f}%"))
        for key, value in rows:
            grid.add_row(key, Text(value))
        for gpu in t.gpu_use:
            grid.add_row(f"GPU {gpu.index}", self._gpu_line(gpu))
        params = Text(plain(_json(t.input_params), one_line=False))
        return Group(grid, Text("\nparameters", style="bold"), params)

    def _gpu_line(self, gpu: GpuView) -> Text:
        """One GPU the task holds: its reading now, and IDLE with how long when it is flagged."""
        name = plain((gpu.name or "GPU").removeprefix("NVIDIA "), 24)
        memory = f"{gigabytes(gpu.memory_used_gb)}/{gigabytes(gpu.memory_total_gb)}"
        line = Text(f"{name} · {gpu.utilization:.0f}% · {memory}")
        if gpu.idle:
            line.append(f"  IDLE for {age(gpu.idle_s)}", self.console.palette.style("meter-mid", bold=True))
        return line

    def _attempts(self, t: TaskView, now: Any) -> RenderableType:
        history = t.attempt_history
        if not history:
            return Text("\nno attempts yet", style=self.console.palette.style("muted"))
        table = Table(box=None, padding=(0, 1), show_edge=False, title="attempts (times ago)", title_justify="left",
                      title_style="bold")
        exits = any(a.exit_code is not None for a in history)
        for column in ("#", "worker", "start", "end", "reason", *(("exit",) if exits else ())):
            table.add_column(column, no_wrap=True)
        for a in history:
            worker = a.worker_id or ""
            ended = age(seconds_since(a.ended_at, now)) if a.ended_at else "now"
            row: list[str | Text] = [str(a.number), Text(plain(self._hosts.get(worker, short_id(worker)), 14)),
                                     age(seconds_since(a.started_at or a.leased_at, now)), ended,
                                     Text(plain(a.end_reason or ("running" if ended == "now" else ""), 12))]
            if exits:
                row.append(str(a.exit_code) if a.exit_code is not None else "")
            table.add_row(*row)
        return Group(Text(""), table)

    def _outcome(self, t: TaskView) -> RenderableType:
        palette = self.console.palette
        if t.error:
            return Group(Text("\nerror", style="bold"),
                         Text(plain(t.error, 4000, one_line=False), style=palette.status("failed")))
        result = t.result
        if isinstance(result, dict) and isinstance(result.get(ROWS), list):
            return Group(Text("\nresult", style="bold"), molecule_table(result, t.batch_id,
                                                                       palette.style("muted"),
                                                                       palette.status("failed")))
        if result is not None:
            return Group(Text("\nresult", style="bold"), Text(plain(_json(result), 4000, one_line=False)))
        return Text("")

    def _timeline(self, now: Any) -> RenderableType:
        """What happened to the task, oldest first (times ago), as `aidd show` prints it."""
        if not self._events:
            return Text("")
        table = Table(box=None, padding=(0, 1), show_edge=False, title="timeline (times ago)", title_justify="left",
                      title_style="bold")
        table.add_column("ago", no_wrap=True, justify="right")
        table.add_column("what")
        muted = self.console.palette.style("muted")
        for event in self._events:
            when = "now" if event.get("kind") == "waiting" else age(seconds_since(event.get("at"), now))
            table.add_row(Text(when, style=muted), Text(plain(event.get("text"), 300)))
        return Group(Text(""), table)

    def _files_view(self) -> RenderableType:
        """Inputs and each attempt's outputs with their sizes (`aidd files ID` downloads them)."""
        if not self._files:
            return Text("")
        table = Table(box=None, padding=(0, 1), show_edge=False, title="files", title_justify="left",
                      title_style="bold")
        for column in ("", "name", "size"):
            table.add_column(column, no_wrap=True)
        for f in self._files.get("inputs") or []:
            table.add_row("input", Text(plain(f.get("name"), 50)), file_size(f.get("size")))
        for attempt in self._files.get("attempts") or []:
            for f in attempt.get("outputs") or []:
                table.add_row(f"out #{attempt.get('number')}", Text(plain(f.get("name"), 50)),
                              file_size(f.get("size")))
        return Group(Text(""), table)

    # -- keys ---------------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_log(self) -> None:
        self._log_maximised = not self._log_maximised
        self.set_class(self._log_maximised, "-log-only")

    def action_toggle_follow(self) -> None:
        log = self.query_one("#log", RichLog)
        log.auto_scroll = not log.auto_scroll
        log.border_title = "Log (following)" if log.auto_scroll else "Log (paused: f follows)"
        if log.auto_scroll:
            log.scroll_end(animate=False)

    @work(group="action", exit_on_error=False)
    async def act(self, action: str) -> None:
        if self.record is None:
            return
        label = f"task {task_label(self.record)}"
        await run_task_action(self.console, action, Target(label, ids=(self.task_id,), statuses=(self.record.status,),
                                                           attempt_id=self.record.attempt_id))
        self.refresh_now()
