"""The `?` screen: every key, by where it works (built from `console.keys`)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.keys import help_rows


class HelpModal(ModalScreen[None]):
    """A scrollable table of keys; esc, `?` or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, read_only: bool = False) -> None:
        super().__init__()
        self._read_only = read_only

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column()
        section = ""
        for where, key, what in help_rows(self._read_only):
            if where != section:
                if section:
                    table.add_row("", "", "")
                table.add_row(Text(where, style="underline"), "", "")
                section = where
            table.add_row("", Text(key, style="bold"), Text(what))
        with Vertical(id="dialog", classes="dialog help"):
            yield Static(Text("Keys" + (" (read-only: actions that change things are hidden)"
                                        if self._read_only else "")), classes="dialog-title")
            with VerticalScroll():
                yield Static(table)
            yield Static(Text("Mouse: click a tab, a row, a column header (sort) or a button. Esc closes."),
                         classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
