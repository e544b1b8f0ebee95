"""The Textual app: the four panes as modes, app-wide keys, the theme, and the connection banner's state.

Screens own their logic (console/screens); the app only routes between them and holds what they share:
the coordinator client, the options, the palette of the current theme and the connection state.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from textual.app import App, SystemCommand
from textual.binding import BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from aiddclient.client import CoordinatorClient
from console import keys
from console.commands import GoToTask, action_commands
from console.options import ConsoleOptions, QuitChoice
from console.palette import Palette
from console.preferences import load_theme, save_theme
from console.query import TaskQuery
from console.screens.batches import BatchesScreen
from console.screens.help import HelpModal
from console.screens.live import LiveScreen
from console.screens.queues import QueuesScreen
from console.screens.quit import ask_to_quit
from console.screens.submit import SubmitModal
from console.screens.tasks import TasksScreen
from console.screens.workers import WorkersScreen
from console.text import age
from themes import DEFAULT_THEME, SEMANTIC_DEFAULTS, THEMES, theme_names

if TYPE_CHECKING:
    from console.localagent import LocalAgent


PALETTE_WAIT_S = 5.0
"""How long an action chosen in the palette waits for its pane's fresh data before acting on what is shown."""
STARTUP_CHECK_S = 0.05
"""How often the console looks at how far the embedded coordinator's start got."""


class AiddConsole(App[QuitChoice]):
    """The operations console: live panes over one coordinator client (embedded or attached)."""

    TITLE = "AIDD console"
    CSS_PATH = "console.tcss"
    MODES = {"queues": QueuesScreen, "workers": WorkersScreen, "tasks": TasksScreen, "batches": BatchesScreen}
    DEFAULT_MODE = "queues"
    BINDINGS: ClassVar[list[BindingType]] = [*keys.APP]
    COMMANDS = App.COMMANDS | {GoToTask}
    NOTIFICATION_TIMEOUT = 6

    problem: reactive[str] = reactive("")
    """What is wrong with the coordinator connection, for the banner ("" when all is well)."""
    where: reactive[str] = reactive("")
    """What the top bar says about the coordinator."""
    starting: reactive[str] = reactive("")
    """How far the embedded coordinator's start got (`starting PostgreSQL…`); "" once it answers (or attached)."""

    def __init__(self, client: CoordinatorClient, options: ConsoleOptions,
                 local_agent: LocalAgent | None = None) -> None:
        super().__init__()
        self.client = client
        self.options = options
        self.local_agent = local_agent
        self.animation_level = options.animation_level
        for theme in THEMES:
            self.register_theme(theme)
        wanted = options.theme or load_theme(options.state_dir) or DEFAULT_THEME
        self.theme = wanted if wanted in theme_names() else DEFAULT_THEME
        self._palette: tuple[str, Palette] | None = None
        self._task_query: TaskQuery | None = None
        self._last_ok: datetime | None = None
        self._agent_reported = False
        self._startup_timer: Timer | None = None
        self.set_reactive(AiddConsole.where, options.where)
        if options.startup is not None:
            self.set_reactive(AiddConsole.starting, options.startup.stage)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """The console's semantic variables for any theme that lacks them (e.g. Textual's own)."""
        return dict(SEMANTIC_DEFAULTS)

    @property
    def palette(self) -> Palette:
        """Cell styles of the current theme."""
        if self._palette is None or self._palette[0] != self.theme:
            self._palette = (self.theme, Palette(self.get_css_variables()))
        return self._palette[1]

    def on_mount(self) -> None:
        for notice in self.options.notices:
            self.notify(notice, severity="warning", timeout=15, markup=False)
        if self.local_agent is not None:
            self.set_interval(2.0, self._check_agent)
        if self.options.startup is not None:
            self._startup_timer = self.set_interval(STARTUP_CHECK_S, self._check_startup)
        if self.options.freeze_gc:
            self.call_after_refresh(gc.freeze)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide destructive keys in read-only mode."""
        return not (self.options.read_only and action in keys.DESTRUCTIVE)

    # -- connection state (reported by the screens' polls) --------------------------------------------

    def report_poll(self, error: str | None) -> None:
        """A poll finished: clear the banner, or say what failed and that the console keeps trying."""
        if error is None:
            self._last_ok = self.options.now()
            self.problem = ""
            return
        if self._last_ok is None:
            shown = "nothing received yet"
        else:
            shown = f"the panes show data from {age((self.options.now() - self._last_ok).total_seconds())} ago"
        self.problem = f"Coordinator problem: {error}. Retrying every few seconds; {shown}."

    def report_slow(self, seconds: float) -> None:
        """A poll is taking long: say so (the console stays usable meanwhile)."""
        if not self.problem:
            self.problem = (f"The coordinator at {self.client.url} is slow: no answer for {seconds:.0f}s. "
                            "Still waiting; keys keep working.")

    # -- navigation ---------------------------------------------------------------------------------

    def show_tasks(self, query: TaskQuery) -> None:
        """Open the Tasks pane filtered by `query` (from another pane)."""
        if self.current_mode == "tasks" and isinstance(self.screen, TasksScreen):
            self.screen.set_query(query)
            return
        self._task_query = query
        self.switch_mode("tasks")

    def take_task_query(self) -> TaskQuery | None:
        """The query another pane asked the Tasks pane to show (once)."""
        query, self._task_query = self._task_query, None
        return query

    def action_help(self) -> None:
        self.push_screen(HelpModal(self.options.read_only))

    def action_new(self) -> None:
        def submitted(outcome: str | None) -> None:
            if outcome:
                self.notify(outcome, markup=False)
                if isinstance(self.screen, LiveScreen):
                    self.screen.refresh_now()
        self.push_screen(SubmitModal(), submitted)

    async def action_quit(self) -> None:
        """`q` (and ctrl+q, the palette's Quit): quit, or first ask what becomes of running work."""
        ask_to_quit(self)

    def action_next_theme(self) -> None:
        names = theme_names()
        name = names[(names.index(self.theme) + 1) % len(names)] if self.theme in names else names[0]
        self.set_theme(name)

    def set_theme(self, name: str) -> None:
        """Switch to theme `name` and remember it."""
        self.theme = name
        save_theme(self.options.state_dir, name)
        self.notify(f"Theme: {name}", timeout=2)

    def action_filter_tasks(self) -> None:
        self.run_on_pane("tasks", "filter")

    def run_on_pane(self, mode: str, action: str) -> None:
        """Switch to a pane and run one of its actions there (from the command palette), once the pane shows
        fresh data: a pane not shown before has no rows yet ("no worker under the cursor"), and rows may have
        moved since it was last shown."""
        self.switch_mode(mode)
        self.run_worker(self._act_when_fresh(action), group="palette", exit_on_error=False)

    async def _act_when_fresh(self, action: str) -> None:
        screen = self.screen
        if isinstance(screen, LiveScreen) and not self.starting:
            with contextlib.suppress(TimeoutError):  # a coordinator that does not answer: act on what is shown
                await asyncio.wait_for(screen.next_refresh(), PALETTE_WAIT_S)
        await screen.run_action(action)

    def action_refresh(self) -> None:
        if isinstance(self.screen, LiveScreen):
            self.screen.refresh_now()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette (`:` or ctrl+p): panes, every action and themes by name."""
        for mode, title in (("queues", "Queues"), ("workers", "Workers"), ("tasks", "Tasks"),
                            ("batches", "Batches")):
            yield SystemCommand(f"{title} pane", f"Show the {title.lower()} pane",
                                lambda m=mode: self.switch_mode(m))  # type: ignore[misc]
        yield from action_commands(self, screen)
        if not self.options.read_only:
            yield SystemCommand("New task or batch", "Submit a task, or a batch from a file", self.action_new)
        yield SystemCommand("Refresh now", "Poll the coordinator now", self.action_refresh)
        for name in theme_names():
            yield SystemCommand(f"Theme: {name}", "Switch to this colour theme (remembered)",
                                lambda n=name: self.set_theme(n))  # type: ignore[misc]
        yield SystemCommand("Keys", "Every key of the console", self.action_help)
        yield SystemCommand("Quit", "Quit the console", self.action_quit)

    def _check_startup(self) -> None:
        """Show how far the embedded coordinator's start got; once it answers, connect the panes to it."""
        startup = self.options.startup
        if startup is None:
            return
        if startup.error is not None:  # `aidd` prints it as one line
            self._stop_startup_checks()
            self.exit(return_code=1)
            return
        client = startup.client
        if client is None:
            self.starting = startup.stage
            return
        self._stop_startup_checks()
        placeholder, self.client = self.client, client
        self.run_worker(placeholder.aclose(), exit_on_error=False)
        started = startup.started
        self.where = started.where
        for notice in started.notices:
            self.notify(notice, severity="warning", timeout=15, markup=False)
        if started.local_agent is not None:
            self.local_agent = started.local_agent
            self.set_interval(2.0, self._check_agent)
        self.starting = ""
        if isinstance(self.screen, LiveScreen):
            self.screen.refresh_now()

    def _stop_startup_checks(self) -> None:
        if self._startup_timer is not None:
            self._startup_timer.stop()

    def _check_agent(self) -> None:
        agent = self.local_agent
        if agent is None or self._agent_reported:
            return
        ended = agent.ended()
        if ended is not None:
            self._agent_reported = True
            self.notify(f"The local agent stopped ({ended}); its output is in {agent.log_path}",
                        severity="error", timeout=30, markup=False)
