"""The `/` dialog: filter tasks by status, service, group, why they wait and free text."""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from console.query import STATUSES, TaskQuery
from coordinator.states import ReasonCode

REASONS = tuple(code.value for code in ReasonCode)


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in re.split(r"[,\s]+", value.strip()) if n))


class FilterModal(ModalScreen[TaskQuery | None]):
    """Edits a TaskQuery; enter applies, esc leaves the filter as it was."""

    BINDINGS = [Binding("escape", "cancel", "Close")]

    def __init__(self, query: TaskQuery) -> None:
        super().__init__()
        self._query = query

    def compose(self) -> ComposeResult:
        q = self._query
        with Vertical(id="dialog", classes="dialog filter"):
            yield Static(Text("Filter tasks"), classes="dialog-title")
            with Vertical(classes="form-row"):
                yield Label("Text in any column or the parameters (a SMILES, a hostname)")
                yield Input(q.text, placeholder="e.g. EGFR or 3f2a9c", id="text", compact=True)
            with Horizontal(classes="form-row"):
                with Vertical(classes="field"):
                    yield Label("Service (comma-separated)")
                    yield Input(",".join(q.service), placeholder="admet, docking", id="service", compact=True)
                with Vertical(classes="field"):
                    yield Label("Group")
                    yield Input(",".join(q.group), placeholder="gpu", id="group", compact=True)
            with Vertical(classes="form-row"):
                yield Label("Waiting because (reason codes, as the Queues pane and `aidd tasks` name them)")
                yield Input(",".join(q.reason), placeholder="no_group, too_big, busy, paused", id="reason",
                            compact=True)
            yield Label("Status (space ticks; none ticked = any status)")
            with Grid(id="statuses"):
                for status in STATUSES:
                    yield Checkbox(status, status in q.status, id=f"status-{status}", compact=True)
            kept = [p for p in q.describe().split(" · ") if p.startswith(("batch ", "worker "))]
            if kept:
                yield Static(Text("Also kept: " + " · ".join(kept) + " (Clear all removes them)"),
                             classes="dialog-hint")
            with Horizontal(classes="buttons"):
                yield Button("Apply (enter)", variant="primary", id="apply", compact=True)
                yield Button("Clear all", id="clear", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#text", Input).focus()

    def _collected(self) -> TaskQuery:
        statuses = tuple(s for s in STATUSES if self.query_one(f"#status-{s}", Checkbox).value)
        reasons = _names(self.query_one("#reason", Input).value)
        if unknown := [r for r in reasons if r not in REASONS]:
            self.notify(f"not a reason code: {', '.join(unknown)} (one of {', '.join(REASONS)})", severity="warning")
        return TaskQuery(status=statuses, service=_names(self.query_one("#service", Input).value),
                         group=_names(self.query_one("#group", Input).value),
                         reason=tuple(r for r in reasons if r in REASONS),
                         text=self.query_one("#text", Input).value.strip(), batch_id=self._query.batch_id,
                         batch_name=self._query.batch_name, worker_id=self._query.worker_id,
                         worker_name=self._query.worker_name)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(self._collected())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "apply":
            self.dismiss(self._collected())
        elif event.button.id == "clear":
            self.dismiss(TaskQuery())
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RowFilterModal(ModalScreen[str | None]):
    """The `/` of the panes that show every row at once: a text to look for in any column (empty: all rows)."""

    BINDINGS = [Binding("escape", "cancel", "Close")]

    def __init__(self, text: str, what: str) -> None:
        super().__init__()
        self._text = text
        self._what = what

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog filter"):
            yield Static(Text(f"Filter {self._what}"), classes="dialog-title")
            yield Label("Text in any column (empty: show every row; enter applies, esc leaves it as it was)")
            yield Input(self._text, placeholder="e.g. gpu or offline", id="text", compact=True)

    def on_mount(self) -> None:
        self.query_one("#text", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
