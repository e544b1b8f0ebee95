"""The `n` dialog: submit one task, or a batch (one task per input of a file) with a progress bar."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static, TextArea

from aiddclient.client import ApiError
from aiddclient.submitfile import read_batch_file, submit_in_chunks
from aiddclient.views import WorkerView
from console.text import plain, short_id
from coordinator.errors import ConfigError

if TYPE_CHECKING:
    from console.app import AiddConsole

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""Service, type and group names (the coordinator's rule: they become parts of Redis keys)."""

FIELDS: list[tuple[str, str, str]] = [
    ("service", "Service", "admet"), ("task_type", "Type", "qikprop"), ("name", "Name", ""),
    ("priority", "Priority (3 = high)", "2"), ("group", "Group", "default"),  # then one a worker serves
    ("cpu", "CPU", "1"), ("memory_gb", "Memory GB", "0"), ("gpu", "GPUs", "0"),
    ("gpu_memory_gb", "GPU mem GB", "0"),
    ("file", "Batch file (optional; one input per line)", ""),
    ("param_name", "Param per line", "smiles"),
]

DEFAULT_GROUP = "default"


def served_group(workers: list[WorkerView]) -> str | None:
    """The group to offer: `default` if an online worker serves it, else the one most online workers serve
    (None: no worker is online, nothing to go by)."""
    counts = Counter(str(g) for w in workers if w.status == "online" for g in w.groups)
    if not counts or DEFAULT_GROUP in counts:
        return DEFAULT_GROUP if counts else None
    return max(sorted(counts), key=lambda g: counts[g])


PLACEHOLDERS = {"name": "e.g. hERG check, series B (with a file: the batch's name)",
                "file": "e.g. ~/ligands.smi (empty: one task)"}


class FormError(ValueError):
    """A field the operator has to fix; the message names it."""


class SubmitModal(ModalScreen[str | None]):
    """A form for a task; with a file path, one task per input as a batch. Dismisses with what was submitted."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("ctrl+s", "submit", "Submit")]

    def __init__(self) -> None:
        super().__init__()
        self._sending = False

    @property
    def console(self) -> AiddConsole:
        """The console app, typed."""
        return cast("AiddConsole", self.app)

    def compose(self) -> ComposeResult:
        defaults = {key: value for key, _, value in FIELDS}
        labels = {key: label for key, label, _ in FIELDS}

        def field(key: str) -> ComposeResult:
            with Vertical(classes="field"):
                yield Label(labels[key])
                yield Input(defaults[key], id=key, compact=True, placeholder=PLACEHOLDERS.get(key, ""))

        with Vertical(id="dialog", classes="dialog submit"):
            yield Static(Text("New task or batch"), classes="dialog-title")
            with VerticalScroll():
                with Horizontal(classes="form-row"):
                    yield from field("service")
                    yield from field("task_type")
                    yield from field("priority")
                    yield from field("group")
                with Horizontal(classes="form-row"):
                    yield from field("name")
                with Horizontal(classes="form-row"):
                    for key in ("cpu", "memory_gb", "gpu", "gpu_memory_gb"):
                        yield from field(key)
                yield Label("Parameters (a JSON object)")
                yield TextArea("", id="params", compact=True, show_line_numbers=False,
                               placeholder='e.g. {"smiles": "CCO"} (empty: no parameters)')
                with Horizontal(classes="form-row"):
                    yield from field("file")
                    yield from field("param_name")
            yield Static(id="form-error")
            progress = ProgressBar(id="progress", show_eta=False)
            progress.display = False
            yield progress
            with Horizontal(classes="buttons"):
                yield Button("Submit (ctrl+s)", variant="primary", id="submit", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#service", Input).focus()
        self._offer_served_group()

    @work(group="submit-group", exit_on_error=False)
    async def _offer_served_group(self) -> None:
        """Put in the Group field one that an online worker serves (a task for a group nobody serves waits
        forever), unless the operator has typed one meanwhile."""
        try:
            workers = await self.console.client.workers(status="online")
        except ApiError:
            return
        group = served_group(workers)
        field = self.query_one("#group", Input)
        if group is not None and field.value == DEFAULT_GROUP:
            field.value = group

    def _value(self, key: str) -> str:
        return self.query_one(f"#{key}", Input).value.strip()

    def template(self) -> dict[str, Any]:
        """The task body from the form, or FormError naming the field to fix."""
        body: dict[str, Any] = {}
        for key in ("service", "task_type"):
            if not NAME.match(self._value(key)):
                raise FormError(f"{key.replace('_', ' ')}: letters, digits, _ . - (starting with a letter or digit)")
            body[key] = self._value(key)
        group = self._value("group") or "default"
        if not NAME.match(group):
            raise FormError("group: letters, digits, _ . - (starting with a letter or digit)")
        body["group"] = group
        body["name"] = self._value("name")
        try:
            body["priority"] = int(self._value("priority") or "2")
        except ValueError:
            raise FormError("priority: a whole number (3 high, 2 medium, 1 low)") from None
        resources: dict[str, float] = {}
        for key in ("cpu", "memory_gb", "gpu", "gpu_memory_gb"):
            try:
                value = float(self._value(key) or "0")
            except ValueError:
                raise FormError(f"{key.replace('_', ' ')}: a number") from None
            if value < 0:
                raise FormError(f"{key.replace('_', ' ')}: cannot be negative")
            resources[key] = value
        body["resources"] = resources
        text = self.query_one("#params", TextArea).text.strip() or "{}"
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormError(f"parameters: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        if not isinstance(params, dict):
            raise FormError("parameters: must be a JSON object, e.g. {\"smiles\": \"CCO\"}")
        body["input_params"] = params
        return body

    def show_error(self, message: str) -> None:
        """Show what is wrong (plain text) and keep the form open."""
        self.query_one("#form-error", Static).update(Text(message, style=self.console.palette.status("failed")))

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        try:
            self.template()
            self.show_error("")
        except FormError as exc:
            self.show_error(str(exc))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.action_close()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_close(self) -> None:
        if not self._sending:
            self.dismiss(None)

    def action_submit(self) -> None:
        if self._sending:
            return
        try:
            body = self.template()
        except FormError as exc:
            self.show_error(str(exc))
            return
        self._sending = True
        self.show_error("")
        self._send(body, self._value("file"), self._value("param_name") or "smiles")

    @work(group="submit", exit_on_error=False)
    async def _send(self, body: dict[str, Any], file: str, param_name: str) -> None:
        client = self.console.client
        try:
            if not file:
                task = await client.submit(body)
                self.dismiss(f"Submitted task {short_id(task['id'])} ({task['status']}) to {body['service']}")
                return
            inputs = await asyncio.to_thread(read_batch_file, Path(file).expanduser(), param_name)
            progress = self.query_one("#progress", ProgressBar)
            progress.display = True
            progress.update(total=len(inputs), progress=0)
            batch_name = body.pop("name") or Path(file).name  # its tasks are named after their inputs
            result = await submit_in_chunks(client, body, inputs, name=batch_name,
                                            progress=lambda done, total: progress.update(progress=done))
            self.dismiss(f"Submitted {result['count']} tasks as batch {short_id(result['batch_id'])} "
                         f"({plain(batch_name, 40)})")
        except (ApiError, ConfigError) as exc:
            field = exc.field if isinstance(exc, ApiError) else None
            named = f" [{field}]" if field and not str(exc).startswith(field) else ""  # the API's 422s name it first
            self.show_error(f"Not submitted{named}: {plain(str(exc), 300)}")
        finally:
            self._sending = False
