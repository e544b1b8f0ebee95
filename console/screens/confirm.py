"""The confirmation asked before anything that changes tasks or workers."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmModal(ModalScreen[bool]):
    """Says what will happen to how many tasks; `y` (or the button) confirms, `n` / esc does nothing."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, title: str, body: str, confirm_label: str) -> None:
        super().__init__()
        self._title, self._body, self._confirm_label = title, body, confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog confirm"):
            yield Static(Text(self._title), classes="dialog-title")
            yield Static(Text(self._body), classes="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button(f"{self._confirm_label} (y)", variant="error", id="yes", compact=True)
                yield Button("No (n)", variant="default", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
