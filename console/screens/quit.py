"""What `q` does to running work: keep it running in the background, or stop everything.

Quitting the embedded console is a coordinator outage, not a lost worker (SPEC, "Guarantees"), so with tasks
running `q` asks first. The answer is the app's result; `console.launch` acts on it once the terminal is back
(it moves the coordinator to a background process, or stops the coordinator and the local agent).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from aiddclient.client import ApiError, CoordinatorClient
from console.actions import plural
from console.options import QuitChoice

if TYPE_CHECKING:
    from console.app import AiddConsole

COUNT_TIMEOUT_S = 3.0
"""How long `q` waits for the count of running tasks before it asks without one."""


class QuitModal(ModalScreen[QuitChoice | None]):
    """Says how many tasks run and what each choice does to them; `k` keeps them running (focused), `s` stops
    everything, esc stays in the console."""

    BINDINGS = [Binding("k", "choose('keep-running')", "Keep running"), Binding("s", "choose('stop')", "Stop all"),
                Binding("escape", "stay", "Stay")]

    def __init__(self, running: int | None, background: bool = False, agent: bool = False) -> None:
        super().__init__()
        self._count, self._is_background, self._with_agent = running, background, agent

    def compose(self) -> ComposeResult:
        keep = "Leave it running" if self._is_background else "Keep running"
        with Vertical(id="dialog", classes="dialog quit"):
            yield Static(Text("Quit the console"), classes="dialog-title")
            yield Static(Text(self._body()), classes="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button(f"{keep} (k)", variant="primary", id="keep-running", compact=True)
                yield Button("Stop everything (s)", variant="error", id="stop", compact=True)
                yield Button("Stay (esc)", variant="default", id="stay", compact=True)

    def _body(self) -> str:
        if self._count is None:
            count = "How many tasks run is not known: the coordinator does not answer."
        else:
            verb = "runs" if self._is_background else ("is running" if self._count == 1 else "are running")
            count = (f"The background coordinator {verb} {plural(self._count)}." if self._is_background
                     else f"{plural(self._count).capitalize()} {verb}.")
        again = "`aidd` on this state directory attaches to it again, `aidd stop` stops it."
        handed_back = "running tasks are handed back and run again later, from the start."
        if self._is_background:
            keep = f"Leave it running: only the console quits; the work goes on. {again}"
            stop = ("Stop everything (as `aidd stop`): the background coordinator stops, and so does the local "
                    f"agent if one runs; its {handed_back}")
        elif self._with_agent:
            keep = ("Keep running: the coordinator and the local agent go on in the background, without the "
                    f"console, and the tasks finish. {again}")
            stop = f"Stop everything: the coordinator and the local agent stop; the local agent's {handed_back}"
        else:
            keep = f"Keep running: the coordinator goes on in the background, without the console. {again}"
            stop = ("Stop everything: the coordinator stops; agents keep their running tasks and report them when "
                    "a coordinator answers at this address again (within their disconnect grace).")
        return f"{count}\n\n{keep}\n\n{stop}\n\nStay: back to the console."

    def on_mount(self) -> None:
        self.query_one("#keep-running", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None if event.button.id == "stay" else QuitChoice(str(event.button.id)))

    def action_choose(self, choice: str) -> None:
        self.dismiss(QuitChoice(choice))

    def action_stay(self) -> None:
        self.dismiss(None)


async def running_tasks(client: CoordinatorClient) -> int | None:
    """How many tasks run now; None when the coordinator does not say within COUNT_TIMEOUT_S."""
    try:
        stats = await asyncio.wait_for(client.task_stats(), COUNT_TIMEOUT_S)
    except (ApiError, TimeoutError):
        return None
    return stats.by_status.get("running", 0)


def ask_to_quit(app: AiddConsole) -> None:
    """`q`: quit at once (an attached console, or an embedded one with nothing running), or ask first.

    The question runs in a worker (the count of running tasks is an API call); a second `q` meanwhile is ignored.
    """
    if any(worker.group == "quit" and not worker.is_finished for worker in app.workers):
        return
    app.run_worker(_quit(app), group="quit", exit_on_error=False)


async def _quit(app: AiddConsole) -> None:
    mode = app.options.quit_mode
    if mode == "attached" or app.starting:  # nothing runs yet on a coordinator still starting
        app.exit(QuitChoice.STOP)
        return
    running = await running_tasks(app.client)
    if mode == "embedded" and running == 0:
        app.exit(QuitChoice.STOP)
        return
    choice = await app.push_screen_wait(QuitModal(running, mode == "background", app.local_agent is not None))
    if choice is not None:
        app.exit(choice)
