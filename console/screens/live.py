"""Screens that poll the coordinator: one poll at a time, applied, then the next one armed (never overlapping).

The poll runs in a Textual worker (async HTTP, so the UI thread never waits on the network) and posts a
`LiveScreen.Polled` message; the handler applies it to the widgets and only then arms the next poll with
`set_timer`. A failing poll or a failing `apply` is reported in a banner and never stops the loop or the app.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static, Tabs

from aiddclient.client import ApiError
from console.keys import DESTRUCTIVE
from console.screens.filter import RowFilterModal
from console.widgets.banners import DemoBanner, ProblemBanner, StartingBanner
from console.widgets.keyed_table import KeyedTable
from console.widgets.top_bar import TopBar

if TYPE_CHECKING:
    from console.app import AiddConsole

log = logging.getLogger(__name__)

SLOW_AFTER_S = 3.0
"""A poll still unanswered after this long puts up the "coordinator slow" banner."""
RETRY_WHEN_DOWN_S = 2.0
"""Poll interval while the coordinator does not answer."""
MIN_DELAY_S = 0.01
"""Shortest timer (Textual's timers need a positive interval)."""


class LiveScreen(Screen[None]):
    """A screen fed by a non-overlapping poll loop; subclasses implement `fetch` and `apply`."""

    @dataclass
    class Polled(Message):
        """One poll's outcome: the data, or the error that stopped it; the GPU totals for the top bar."""

        data: Any
        error: str | None
        gpus: dict[str, int] | None = None

    def __init__(self, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self._timer: Timer | None = None
        self._slow_timer: Timer | None = None
        self._in_flight = False
        self._again = False
        self._waiters: list[asyncio.Future[None]] = []
        self.refreshes = 0
        """How many polls this screen has applied (tests and scripts wait on it)."""
        self.last_data: Any = None

    @property
    def console(self) -> AiddConsole:
        """The console app, typed."""
        return cast("AiddConsole", self.app)

    async def fetch(self) -> Any:
        """Ask the coordinator for what this screen shows (runs in a worker)."""
        raise NotImplementedError

    def apply(self, data: Any) -> None:
        """Show fetched data (runs on the UI thread; must not do I/O)."""
        raise NotImplementedError

    async def fetch_gpus(self) -> dict[str, int] | None:
        """The cluster's GPU totals for the top bar (`coordinator.gpus.gpu_totals`), asked for alongside `fetch`;
        None: nothing to show, or the screen shows them from its own data."""
        return None

    def show_gpus(self, totals: dict[str, int]) -> None:
        """Show the GPU totals (screens with a top bar)."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide destructive keys in read-only mode."""
        if self.console.options.read_only and action in DESTRUCTIVE:
            return False
        return True

    # -- the loop -----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.rerender())

    def on_screen_resume(self) -> None:
        self.refresh_now()

    def on_screen_suspend(self) -> None:
        self._cancel_timer()

    def refresh_now(self) -> None:
        """Poll now; if a poll is in flight, poll again as soon as it has been applied.

        Nothing while the embedded coordinator is still starting: the console polls once it answers.
        """
        if self.console.starting:
            return
        if self._in_flight:
            self._again = True
            return
        self._cancel_timer()
        self._in_flight = True
        self._slow_timer = self.set_timer(SLOW_AFTER_S, self._report_slow)
        self.run_worker(self._poll(), group="poll", exit_on_error=False)

    @property
    def polling(self) -> bool:
        """Whether a poll is in flight (or asked for right after the current one)."""
        return self._in_flight or self._again

    async def next_refresh(self) -> None:
        """Wait until a fresh poll has been applied (for tests and the screenshot script)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.refresh_now()
        await waiter

    async def _poll(self) -> None:
        gpus = None
        try:
            (data, gpus), error = await asyncio.gather(self.fetch(), self.fetch_gpus()), None
        except ApiError as exc:
            data, error = None, str(exc)
        except Exception as exc:  # a bug in one pane must not take the console down
            log.exception("poll of %s failed", type(self).__name__)
            data, error = None, f"{type(exc).__name__}: {exc}"
        self.post_message(self.Polled(data, error, gpus))

    def on_live_screen_polled(self, message: LiveScreen.Polled) -> None:
        message.stop()
        self._in_flight = False
        if self._slow_timer is not None:
            self._slow_timer.stop()
        if message.error is None:
            self.last_data = message.data
            self._apply_safely(message.data)
            if message.gpus is not None:
                self.show_gpus(message.gpus)
        self.console.report_poll(message.error)
        self.refreshes += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.is_current or self._again:
            delay = 0.0 if self._again else (
                self.console.options.refresh_s if message.error is None
                else max(self.console.options.refresh_s, RETRY_WHEN_DOWN_S))
            self._again = False
            self._timer = self.set_timer(max(delay, MIN_DELAY_S), self.refresh_now)

    def _apply_safely(self, data: Any) -> None:
        try:
            self.apply(data)
            self.show_pane_error(None)
        except Exception as exc:
            log.exception("%s could not show its data", type(self).__name__)
            self.show_pane_error(f"this pane could not show its data: {type(exc).__name__}: {exc}")

    def rerender(self) -> None:
        """Show the last data again (after a theme change)."""
        if self.last_data is not None:
            self._apply_safely(self.last_data)

    def compose_banners(self) -> ComposeResult:
        """The banners every live screen shows under its title: demo, the coordinator's start, its problems, this
        pane's error."""
        if self.console.options.demo:
            yield DemoBanner()
        yield StartingBanner()
        yield ProblemBanner()
        pane_error = Static(id="pane-error")
        pane_error.display = False
        yield pane_error

    def show_pane_error(self, error: str | None) -> None:
        """Say that this pane failed (the rest of the console goes on)."""
        for banner in self.query("#pane-error").results(Static):
            banner.update(Text(error or ""))
            banner.display = bool(error)

    def _report_slow(self) -> None:
        if self._in_flight:
            self.console.report_slow(SLOW_AFTER_S)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None


class PaneScreen(LiveScreen):
    """One of the main panes: tabs on top, banners, the pane's own widgets, the footer."""

    MODE = ""
    """The app mode this pane is (queues, workers, tasks, batches)."""
    GPUS_FROM_DATA = False
    """Whether the pane's own data has the GPU totals (it calls `show_gpus` in `apply`)."""
    AUTO_FOCUS = "KeyedTable"

    def compose(self) -> ComposeResult:
        yield TopBar(self.MODE)
        yield from self.compose_banners()
        yield from self.compose_pane()
        row_filter = Static(id="row-filter", classes="summary")
        row_filter.display = False
        yield row_filter
        yield Footer(compact=True)

    def compose_pane(self) -> ComposeResult:
        """The pane's own widgets."""
        yield from ()

    def action_filter_rows(self) -> None:
        """`/`: show only the rows of the focused table (else the pane's first) that hold a text."""
        focused = self.focused
        table = focused if isinstance(focused, KeyedTable) else self.query(KeyedTable).first()

        def chosen(text: str | None) -> None:
            if text is not None:
                table.set_filter(text)
                self.show_filter(table)
        self.app.push_screen(RowFilterModal(table.filter_text, f"{self.MODE} rows"), chosen)

    def show_filter(self, table: KeyedTable) -> None:
        """Say under the tables which rows the filter keeps (nothing when there is none)."""
        line = self.query_one("#row-filter", Static)
        line.display = bool(table.filter_text)
        line.update(Text(f'Filter (/): rows holding "{table.filter_text}" · / then enter on an empty text shows '
                         "every row", style=self.console.palette.style("selected")))

    def on_screen_resume(self) -> None:
        self.query_one(Tabs).active = f"tab-{self.MODE}"
        super().on_screen_resume()

    async def fetch_gpus(self) -> dict[str, int] | None:
        """The GPU totals of `/workers/stats`, unless the pane shows them from what it fetches anyway."""
        if self.GPUS_FROM_DATA:
            return None
        return (await self.console.client.worker_stats()).gpu_counts

    def show_gpus(self, totals: dict[str, int]) -> None:
        self.query_one(TopBar).show_gpus(totals, self.console.palette)

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        mode = (event.tab.id or "").removeprefix("tab-")
        if mode and mode != self.MODE and self.is_current:
            self.app.switch_mode(mode)
