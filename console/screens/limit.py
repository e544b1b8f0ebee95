"""The `m` dialog of the Queues pane: how many of a service's tasks may run at once."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

NO_LIMIT = "none"


def parse_limit(value: str) -> int | str | None:
    """A count of at least 0, None for `none` (or nothing), or the problem as text."""
    value = value.strip().lower()
    if value in ("", NO_LIMIT):
        return None
    if not value.isdigit():
        return f"not a count: {value!r} (a whole number, or `none`)"
    return int(value)


class ServiceLimitModal(ModalScreen[tuple[int | None] | None]):
    """Edits one service's running limit; enter applies (a 1-tuple: the limit, None for the configured one),
    esc changes nothing."""

    BINDINGS = [Binding("escape", "cancel", "Close")]

    def __init__(self, service: str, current: int | None) -> None:
        super().__init__()
        self._service, self._current = service, current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog confirm"):
            yield Static(Text(f"Running limit of {self._service}"), classes="dialog-title")
            yield Label(f"Most {self._service} tasks running at once (`{NO_LIMIT}`: the configured limit, if any)")
            yield Input("" if self._current is None else str(self._current), placeholder=NO_LIMIT, id="limit",
                        compact=True)
            yield Static("", id="problem", classes="dialog-hint")
            with Horizontal(classes="buttons"):
                yield Button("Set (enter)", variant="primary", id="set", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#limit", Input).focus()

    def _apply(self) -> None:
        limit = parse_limit(self.query_one("#limit", Input).value)
        if isinstance(limit, str):
            self.query_one("#problem", Static).update(Text(limit))
            return
        self.dismiss((limit,))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "set":
            self._apply()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
