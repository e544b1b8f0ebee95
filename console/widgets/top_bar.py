"""The line at the top of every pane: the panes as tabs (click or 1-4), the cluster's GPUs, and where the
coordinator is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static, Tab, Tabs

from console.palette import Palette

if TYPE_CHECKING:
    from console.app import AiddConsole

PANES: tuple[tuple[str, str], ...] = (("queues", "Queues"), ("workers", "Workers"), ("tasks", "Tasks"),
                                      ("batches", "Batches"))
"""(mode, title) of the main panes, in key order 1-4."""


NARROW = 100
"""Columns under which the top bar leaves out the GPU totals."""


class TopBar(Horizontal):
    """Pane tabs on the left; the cluster's GPUs (allocated, busy, idle) and the coordinator's address on the
    right (the app's `where`, and `starting`)."""

    DEFAULT_CSS = """
    TopBar { height: 2; dock: top; }
    TopBar Tabs { width: 1fr; min-width: 42; }
    TopBar #gpus { width: auto; padding: 0 1; height: 1; text-wrap: nowrap; }
    TopBar #where { width: auto; max-width: 60%; padding: 0 1; height: 1; text-wrap: nowrap;
                    text-overflow: ellipsis; }
    """

    def __init__(self, active: str) -> None:
        super().__init__()
        self._active = active

    def compose(self) -> ComposeResult:
        tabs = [Tab(f"{i} {title}", id=f"tab-{mode}") for i, (mode, title) in enumerate(PANES, 1)]
        tabs_widget = Tabs(*tabs, active=f"tab-{self._active}" if self._active in dict(PANES) else None)
        tabs_widget.can_focus = False  # keys belong to the pane's table; the tabs are for the mouse and 1-4
        yield tabs_widget
        yield Static(id="gpus")
        yield Static(id="where")

    def on_mount(self) -> None:
        self.watch(self.app, "where", self._show_where)
        self.watch(self.app, "starting", self._show_where)

    def on_resize(self, event: events.Resize) -> None:
        """Below NARROW columns the GPU totals give way to the address (and how the start goes): the tabs and
        both do not fit, and the Queues and Workers panes' summary lines say the totals too."""
        self.query_one("#gpus", Static).display = event.size.width >= NARROW

    def _show_where(self, _changed: str) -> None:
        """The app's `where`, and how far the embedded coordinator's start got while it starts."""
        app = cast("AiddConsole", self.app)
        where, starting = app.where, app.starting
        text = f"{where} · {starting}" if starting else where
        self.query_one("#where", Static).update(Text(text, no_wrap=True, overflow="ellipsis"))

    def show_gpus(self, totals: Mapping[str, int] | None, palette: Palette) -> None:
        """Say how many of the cluster's GPUs are allocated to tasks and how many are busy (utilisation), and
        how many allocated ones sit idle; nothing on a cluster without GPUs."""
        self.query_one("#gpus", Static).update(gpu_line(totals, palette))


def gpu_line(totals: Mapping[str, int] | None, palette: Palette) -> Text:
    """`GPUs 3/4 alloc · 2 busy · 1 idle` (the idle count in the warning colour), or nothing without GPUs."""
    line = Text(no_wrap=True)
    if not totals or not totals.get("gpus"):
        return line
    line.append(f"GPUs {totals.get('allocated_gpus', 0)}/{totals['gpus']} alloc · {totals.get('busy_gpus', 0)} busy")
    if totals.get("idle_gpus"):
        line.append(" · ")
        line.append(f"{totals['idle_gpus']} idle", palette.style("meter-mid", bold=True))
    return line
