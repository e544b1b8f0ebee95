"""Snapshots of every console screen and dialog at 120x40 (and each pane at 80x24 and 200x50), on a real
API over the fixed demo picture.

The data is written with fixed ids and times relative to an anchor, and the console's clock is fixed at
that anchor, so the pictures are the same on every run. Regenerate with `pytest --snapshot-update` and
look at the SVGs (tests/__snapshots__/) before accepting them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from aiddclient.client import CoordinatorClient
from console.screens.detail import TaskDetailScreen
from console.screens.quit import QuitModal
from coordinator.server import BackgroundServer
from tests.consolekit import console, refreshed, until, write_fixed
from tests.support.fixed import FixedState

SIZE = (120, 40)
Before = Callable[[Pilot[Any]], Awaitable[None]]


@pytest.fixture
def fixed(api_server: BackgroundServer) -> FixedState:
    """The fixed demo picture in this test's record."""
    return write_fixed(api_server)


def pane(key: str | None) -> Before:
    """Go to a pane (1-4) and wait until it shows its data."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await refreshed(pilot)
        if key:
            await pilot.press(key)
            await refreshed(pilot)
    return run_before


async def still_cursors(pilot: Pilot[Any]) -> None:
    """Stop the text cursors blinking (shown steadily): a blinking one is drawn or not depending on how long the
    picture took after the last key, and a slow machine caught it off."""
    for field in pilot.app.screen.query("Input, TextArea"):
        field.cursor_blink = False  # type: ignore[attr-defined]
    await pilot.pause()


def fixed_console(server: BackgroundServer, state: FixedState, **options: Any) -> Any:
    """The console on the fixed picture: fixed clock, one poll per screen visit."""
    return console(server, now=lambda: state.anchor, refresh_s=3600, **options)


def test_queues_pane(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Queues: admet, docking and inference rows with their state (docking `≤ 8`, inference `paused`),
    pending / running / last hour's figures, oldest wait (39m, 25m, 5m) and a per-minute throughput
    sparkline; above, the totals by status and the cluster totals; below, the latest failures with their
    errors."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane(None))


def test_workers_pane(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Workers: six hosts (demo-cpu-03 offline and last, dimmed, its readings without bars; demo-gpu-02
    draining), a row per GPU under each GPU host with utilisation bars, memory and temperature, slots used/total,
    heartbeat ages 1s to 2h; the task column starts at the right edge (see test_console_gpu_snapshots)."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane("2"))


def test_tasks_pane(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Tasks: the first 100 of 166 newest first (`Age ▲` in the header: the sort arrow), coloured statuses,
    the worker and GPU indices of running and finished tasks, and the task whose name holds markup and a
    terminal escape shown literally as `[bold red]not markup[/] escaped name` (cut with `…`)."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane("3"))


def test_batches_pane(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Batches: three batches newest first, each with its short id, a segmented progress bar (succeeded,
    failed, cancelled, running, pending), counts (Fail: failed and timed out, what r retries), rate per
    minute and ETA."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane("4"))


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
@pytest.mark.parametrize("key", ["1", "2", "3", "4"], ids=["queues", "workers", "tasks", "batches"])
def test_pane_fits_the_terminal(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState, key: str,
                                size: tuple[int, int]) -> None:
    """Each pane at 80x24 and at 200x50. At 80 columns the columns of least use are gone (Tasks: id, status,
    name, age and the note; Workers: host, status, slots, beat, CPU, GPU; Batches: id, name, bar, done, OK,
    Fail) and what is cut ends in `…`; at 200 every column is there and the widest text column (the task
    note, the batch name, the worker's groups, the failure's error) takes the rest of the width."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=size, run_before=pane(key))


def test_task_detail(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Task detail of the running hERG check: service, priority 3 (high), worker demo-cpu-01, parameters as
    JSON, its attempt, and the log tail (the stderr warning in the failure colour, the escape stripped)."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await refreshed(pilot)
        pilot.app.push_screen(TaskDetailScreen(str(fixed.running_task)))
        await refreshed(pilot)
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=run_before)


def test_failed_task_detail(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Task detail of a failed docking task: two attempts on demo-gpu-01, the error in full, no log lines."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await refreshed(pilot)
        pilot.app.push_screen(TaskDetailScreen(str(fixed.failed_task)))
        await refreshed(pilot)
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=run_before)


def test_help_dialog(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Help: every key grouped by where it works (everywhere, tasks, workers, batches, queues, detail)."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane(None),
                        press=["question_mark"])


def test_filter_dialog(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Filter dialog over the Tasks pane: text `EGFR` typed, service and group empty, no status ticked."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await pane("3")(pilot)
        await pilot.press("slash", *"EGFR")
        await still_cursors(pilot)
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=run_before)


def test_confirm_dialog(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Confirmation after selecting two tasks with space and pressing c: it names the two selected tasks,
    says what happens to pending and running ones, and focuses No."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane("3"),
                        press=["space", "space", "c"])


def test_bulk_confirm_dialog(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Requeue confirmation for everything matching the (empty) filter (`a` then R): before anything is sent it
    states the counts: the 19 running tasks are stopped and queued again; of the 30 pending, only those waiting
    out a retry backoff move."""
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=pane("3"),
                        press=["a", "R"])


def test_submit_dialog(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """Submit dialog with broken JSON in the parameters: the error names the problem and where it is."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await refreshed(pilot)
        await pilot.press("n")
        await pilot.pause()
        area = pilot.app.screen.query_one("#params")
        area.text = '{"smiles": "CCO",'  # type: ignore[attr-defined]
        await still_cursors(pilot)
    assert snap_compare(fixed_console(api_server, fixed), terminal_size=SIZE, run_before=run_before)


def test_light_theme(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """The Tasks pane in the light theme: dark text on a light background, the same status colours' roles."""
    assert snap_compare(fixed_console(api_server, fixed, theme="aidd-light"), terminal_size=SIZE,
                        run_before=pane("3"))


def test_high_contrast_theme(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """The Workers pane in the high-contrast theme: black background, pure bright colours."""
    assert snap_compare(fixed_console(api_server, fixed, theme="aidd-high-contrast"), terminal_size=SIZE,
                        run_before=pane("2"))


def test_read_only_tasks(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """`--read-only`: the Tasks pane's footer has no Cancel, Retry, Requeue or New keys."""
    assert snap_compare(fixed_console(api_server, fixed, read_only=True), terminal_size=SIZE,
                        run_before=pane("3"))


def test_coordinator_down_banner(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """The coordinator cannot be reached: a banner says so, names the address and that it keeps retrying;
    the panes stay usable (empty here, as nothing was ever received)."""
    down = CoordinatorClient("http://127.0.0.1:9", timeout=2)
    assert snap_compare(fixed_console(api_server, fixed, client=down), terminal_size=SIZE, run_before=pane(None))


def test_demo_banner_narrow(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """The Tasks pane at 100x30 with the demo banner: nothing an operator needs is cut off (name, status,
    age; the rest scrolls)."""
    assert snap_compare(fixed_console(api_server, fixed, demo=True), terminal_size=(100, 30),
                        run_before=pane("3"))


def test_quit_dialog(snap_compare: Any, api_server: BackgroundServer, fixed: FixedState) -> None:
    """`q` on the embedded console at 80x24 with the 19 running tasks of the fixed picture: the dialog says so,
    what keep running and stop everything do, that esc stays, and focuses Keep running."""
    async def run_before(pilot: Pilot[Any]) -> None:
        await refreshed(pilot)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(pilot.app.screen, QuitModal), what="the quit dialog")
        await pilot.pause()
    assert snap_compare(fixed_console(api_server, fixed, quit_mode="embedded"), terminal_size=(80, 24),
                        run_before=run_before)
