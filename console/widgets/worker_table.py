"""Workers: one row per host (status, slots, CPU and memory bars, heartbeat, history) and one per GPU, naming the
task on it and flagging it when it sits idle. An offline host's last readings are dimmed, never shown as live."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.message import Message
from textual.widgets import DataTable

from aiddclient.views import GpuTask, GpuView, WorkerView
from console import keys
from console.palette import Palette
from console.text import MISSING, age, cell, gigabytes, plain, seconds_since, short_id, sparkline
from console.widgets.keyed_table import Column, KeyedTable, Row

METER = 5
HISTORY = 12
TASK = 24
"""Width of the column naming the task on each GPU."""
STALE_HEARTBEAT_S = 30.0
"""Heartbeat ages beyond this are shown in the alarm colour (the coordinator's default timeout)."""
TASK_COLUMN = 9
"""Position of the task column in a row (a host row puts an offline host's last-seen age there)."""
FRESH_HEARTBEAT_S = 10.0
FRESH = "<10s"
"""Ages under the usual heartbeat interval are all just fresh: showing every second of them would rewrite
one cell per worker per refresh (500 workers: 500 cell updates a second) for no information."""


def utilisation(worker: WorkerView) -> float:
    """The figure the history sparkline follows: mean GPU utilisation (%), or CPU (%) without GPUs."""
    if worker.gpus:
        return sum(g.utilization for g in worker.gpus) / len(worker.gpus)
    return worker.cpu_fraction * 100


def sort_key(worker: WorkerView) -> tuple[bool, str]:
    """Live workers first, then by host name."""
    return (worker.offline, worker.hostname)


def gpu_signature(worker: WorkerView) -> tuple[tuple[bool, tuple[str, ...]], ...]:
    """What of a worker's GPUs the rows show besides its heartbeat: the tasks on them and their idle flags."""
    return tuple((g.idle, tuple(t.task_id for t in g.tasks)) for g in worker.gpus)


def task_label(task: GpuTask) -> str:
    """`6a87c9be #2 dock EGFR`: a task on a GPU by short id, attempt and name."""
    return f"{short_id(task.task_id)} #{task.attempt} {plain(task.name)}"


def _task_cell(gpu: GpuView, palette: Palette) -> Text:
    """The task(s) holding a GPU; `IDLE 12m` first, in the warning colour, when it sits idle."""
    tasks = gpu.tasks
    if not tasks:
        return cell("")
    shown = task_label(tasks[0]) + (f" +{len(tasks) - 1}" if len(tasks) > 1 else "")
    if gpu.idle:
        return cell(f"IDLE {age(gpu.idle_s)} {shown}", palette.style("meter-mid", bold=True), 80)
    return cell(shown, "", 80)


def _stale_meter(palette: Palette) -> Callable[[float, int, str], Text]:
    """A reading of an offline host: its label alone, dimmed (no bar, so it never reads as live)."""
    def dimmed(fraction: float, width: int, label: str = "") -> Text:
        return cell(" " * (width + 1) + label, palette.style("muted"))
    return dimmed


class WorkerTable(KeyedTable):
    """Hosts and their GPUs; keeps a short utilisation history per host, one sample per heartbeat."""

    BINDINGS: ClassVar[list[BindingType]] = [*keys.table_enter(keys.WORKERS)]

    @dataclass
    class WorkerChosen(Message):
        """The operator chose a worker (enter or click)."""

        worker_id: str

    def __init__(self) -> None:
        super().__init__([Column("host", "Host / GPU", 20), Column("status", "Status", 8), Column("slots", "Slots", 5),
                          Column("hb", "Beat", 5, drop=3), Column("cpu", "CPU", METER + 5, drop=4),
                          Column("mem", "Memory", METER + 11, drop=6), Column("gpu", "GPU util", METER + 5),
                          Column("gmem", "GPU mem", 9, drop=5), Column("temp", "Temp", 5, drop=7),
                          Column("task", "Task on GPU", TASK, drop=2, grow=2),
                          Column("hist", "Util history", HISTORY, drop=8),
                          Column("groups", "Groups", 16, drop=9, grow=1)], id="worker-table")
        self.by_id: dict[str, WorkerView] = {}
        self._history: dict[str, deque[float]] = {}
        self._sampled: dict[str, str | None] = {}
        self._built: dict[str, tuple[object, tuple[Text, ...], list[Row]]] = {}

    def worker_at_cursor(self) -> WorkerView | None:
        """The worker of the row under the cursor (a GPU row counts as its host)."""
        key = self.cursor_key
        if key is None:
            return None
        return self.by_id.get(key.split(":")[1])

    def show(self, workers: list[WorkerView], palette: Palette, now: datetime) -> None:
        """Replace the rows with these workers.

        A worker's cells are rebuilt only when it sent a heartbeat (or changed status) since the last
        call; otherwise the same cell objects are passed on, so the diff skips them at once. Only the
        heartbeat age is new every time.
        """
        self.by_id = {w.id: w for w in workers}
        rows: list[Row] = []
        for w in sorted(workers, key=sort_key):
            wid = w.id
            signature = (w.last_heartbeat_at, w.status, w.problem, w.running, w.slots, id(palette), gpu_signature(w))
            cached = self._built.get(wid)
            if cached is None or cached[0] != signature:
                self._sample(wid, w)
                gpu_rows: list[Row] = [(f"g:{wid}:{g.index}", self._gpu_cells(g, palette, w.offline)) for g in w.gpus]
                cached = (signature, self._host_cells(w, palette), gpu_rows)
                self._built[wid] = cached
            _, host, gpu_lines = cached
            beat = self._beat_cell(w, palette, now)
            seen = self._last_seen_cell(w, palette, now) if w.offline else host[TASK_COLUMN]
            rows.append((f"w:{wid}", (*host[:3], beat, *host[4:TASK_COLUMN], seen, *host[TASK_COLUMN + 1:])))
            rows.extend(gpu_lines)
        for gone in set(self._built) - set(self.by_id):
            del self._built[gone]
            self._history.pop(gone, None)
            self._sampled.pop(gone, None)
        self.sync(rows)

    def _beat_cell(self, w: WorkerView, palette: Palette, now: datetime) -> Text:
        """The heartbeat age."""
        beat = seconds_since(w.last_heartbeat_at, now)
        stale = (beat is None or beat > STALE_HEARTBEAT_S) and not w.offline
        shown = FRESH if beat is not None and beat < FRESH_HEARTBEAT_S else age(beat)
        return cell(shown, palette.style("meter-high") if stale else "")

    def _last_seen_cell(self, w: WorkerView, palette: Palette, now: datetime) -> Text:
        """`last seen 3m ago`, for an offline host."""
        return cell(f"last seen {age(seconds_since(w.last_heartbeat_at, now))} ago", palette.style("muted"))

    def _sample(self, wid: str, worker: WorkerView) -> None:
        beat = worker.last_heartbeat_at
        if self._sampled.get(wid) == beat and wid in self._history:
            return
        self._sampled[wid] = beat
        self._history.setdefault(wid, deque(maxlen=HISTORY)).append(utilisation(worker))

    def _host_cells(self, w: WorkerView, palette: Palette) -> tuple[Text, ...]:
        """The host row's cells; the heartbeat age (4th) and an offline host's last-seen age (the task column)
        are placeholders, see `show`. An offline host's readings are its last ones: dimmed, without meters."""
        offline = w.offline
        status = "problem" if w.problem else w.status or "?"  # it takes no tasks: say so
        cpu = w.cpu_fraction
        mem_total = w.memory_gb
        mem_used = w.used_memory_gb
        reading = _stale_meter(palette) if offline else palette.meter
        gpus = w.gpus
        if gpus:
            util = sum(g.utilization for g in gpus) / len(gpus) / 100
            g_used = sum(g.memory_used_gb for g in gpus)
            g_total = sum(g.memory for g in gpus)
            temps = [g.temperature for g in gpus if g.temperature is not None]
            dim = palette.style("muted") if offline else ""
            gpu_cells = (reading(util, METER, f"{util * 100:3.0f}%"),
                         cell(f"{gigabytes(g_used)}/{gigabytes(g_total)}", dim),
                         cell(f"{max(temps):.0f}°C" if temps else MISSING, dim))
        else:
            gpu_cells = (cell("no GPU", palette.style("muted")), cell(""), cell(""))
        slots = w.slots
        running = w.running
        return (
            cell(w.hostname, palette.style("muted") if offline else "bold", 20),
            cell(status, palette.status("failed" if w.problem else status)),
            cell(f"{running}/{slots}", palette.level(running / slots) if slots and not offline else ""),
            cell(""),
            reading(cpu, METER, f"{cpu * 100:3.0f}%"),
            reading(mem_used / mem_total if mem_total else 0, METER, f"{gigabytes(mem_used)}/{gigabytes(mem_total)}"),
            *gpu_cells,
            cell(""),
            cell(sparkline(list(self._history.get(w.id, [])), HISTORY, top=100.0),
                 palette.style("muted" if offline else "spark")),
            cell(",".join(plain(g) for g in w.groups), limit=200),
        )

    def _gpu_cells(self, g: GpuView, palette: Palette, offline: bool) -> tuple[Text, ...]:
        util = g.utilization / 100
        total = g.memory
        used = g.memory_used_gb
        temp = g.temperature
        name = plain((g.name or "GPU").removeprefix("NVIDIA "), 14)
        dim = palette.style("muted")
        mem_style = palette.level(used / total) if total else ""
        temp_style = palette.level((temp - 40) / 45) if temp is not None else ""
        return (
            cell(f"  └ {g.index} {name}", dim, 20),
            cell(""), cell(""), cell(""), cell(""), cell(""),
            (_stale_meter(palette) if offline else palette.meter)(util, METER, f"{util * 100:3.0f}%"),
            cell(f"{gigabytes(used)}/{gigabytes(total)}", dim if offline else mem_style),
            cell(f"{temp:.0f}°C" if temp is not None else MISSING, dim if offline else temp_style),
            _task_cell(g, palette),
            cell(""), cell(""),
        )

    def row_group(self, key: str) -> str:
        """A GPU row goes with its host (`w:ID` and `g:ID:index` share the worker id)."""
        return key.split(":")[1]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = str(event.row_key.value)
        self.post_message(self.WorkerChosen(key.split(":")[1]))
