"""Snapshots of what the console says about GPUs and hosts: the task on each GPU, allocated vs busy in the header,
an idle GPU flagged, an offline host dimmed with its age; at 80x24 and 200x50 over the fixed demo picture."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from console.screens.detail import TaskDetailScreen
from coordinator.server import BackgroundServer
from tests.consolekit import refreshed
from tests.support.fixed import FixedState
from tests.test_console_snapshots import fixed, fixed_console, pane

__all__ = ["fixed"]  # the fixture, used by name


def test_workers_pane_wide(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Workers at 200x50: each GPU row names the task on it (short id, attempt #1, name); demo-gpu-02's GPU 0
    reads `IDLE 7m e04e2e05 #1 Vina EGFR …` in the warning colour (2 % for 7 minutes); demo-gpu-02's GPU 1 and
    demo-gpu-01's GPU 3 hold no task. demo-cpu-03 (offline, last) is dimmed, its bars replaced by plain dimmed
    figures, and says `last seen 2h00m ago` in the task column. Summary: `GPUs 8/10 allocated, 7 busy, 1 idle`;
    the top bar `GPUs 8/10 alloc · 7 busy · 1 idle`."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=(200, 50), run_before=pane("2"))


def test_workers_pane_narrow(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Workers at 80x24: the summary with GPUs allocated, busy and idle apart, and the first columns of the
    table (the rest scroll sideways)."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=(80, 24), run_before=pane("2"))


def test_header_on_the_tasks_pane(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """The top bar at 100 columns on the Tasks pane (which fetches the totals itself): the four tabs in full,
    `GPUs 8/10 alloc · 7 busy · 1 idle` (the idle count in the warning colour), then the address as far as it
    fits (narrower, the totals give way to the address: see the 80x24 snapshots of test_console_snapshots)."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=(100, 30), run_before=pane("3"))


def test_idle_gpu_task_detail(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Detail of the docking task on demo-gpu-02: worker demo-gpu-02 GPUs [0], and a `GPU 0` line reading
    `A100-PCIE-40GB · 2% · 31G/40G  IDLE for 7m`, the flag in the warning colour."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await refreshed(pilot)
        pilot.app.push_screen(TaskDetailScreen(str(fixed.idle_gpu_task)))
        await refreshed(pilot)
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=(120, 40), run_before=run_before)
