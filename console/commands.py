"""The command palette's entries (`:` or ctrl+p): every key's action by name, and "go to task" by id prefix.

The names come from the bindings in `console.keys`, so the palette, the footer and the help never disagree:
the current screen's actions run on it; another pane's actions first switch to that pane (each destructive
one still asks before it changes anything).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from textual.app import SystemCommand
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.screen import Screen

from aiddclient.client import ApiError
from console import keys
from console.screens.detail import TaskDetailScreen
from console.text import plain

if TYPE_CHECKING:
    from console.app import AiddConsole

PANES = (("queues", "Queues", keys.QUEUES), ("workers", "Workers", keys.WORKERS), ("tasks", "Tasks", keys.TASKS),
         ("batches", "Batches", keys.BATCHES))
"""The panes (modes), their titles and their keys."""
ID_PREFIX = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{3,35}$")
"""What "go to task" takes: at least four hex digits of a task id."""


def action_commands(app: AiddConsole, screen: Screen[object]) -> Iterator[SystemCommand]:
    """Every action of the current screen, then those of the other panes (which switch there first)."""
    seen: set[str] = set()
    own = [b for b in getattr(type(screen), "BINDINGS", []) if isinstance(b, Binding)]
    for binding in own:
        action = binding.action.split("(")[0]
        if binding.action in seen or screen.check_action(action, ()) is False:
            continue
        seen.add(binding.action)
        yield SystemCommand(binding.description,
                            f"{binding.tooltip} ({keys.key_label(binding.key)})",
                            lambda a=binding.action: screen.run_action(a))  # type: ignore[misc]
    current = getattr(screen, "MODE", "")
    for mode, title, bindings in PANES:
        if mode == current:
            continue
        for binding in bindings:
            action = binding.action.split("(")[0]
            if app.options.read_only and action in keys.DESTRUCTIVE:
                continue
            yield SystemCommand(f"{title}: {binding.description}",
                                f"{binding.tooltip} (on the {title} pane: {keys.key_label(binding.key)})",
                                lambda m=mode, a=binding.action: app.run_on_pane(m, a))  # type: ignore[misc]


class GoToTask(Provider):
    """`:` then a task id or its start (at least four hex digits): open that task's detail."""

    async def search(self, query: str) -> Hits:
        given = query.strip().removeprefix("task").strip()
        if not ID_PREFIX.match(given):
            return
        yield Hit(1.0, f"{keys.GO_TO_TASK} {given}", lambda: self._go(given),
                  help="Open the task whose id starts so (an ambiguous start lists the candidates)")

    async def discover(self) -> Hits:
        yield Hit(0.0, f"{keys.GO_TO_TASK} (type its id, or the start of it)", lambda: None,
                  help="Type : then a task id or its first characters, as git takes commits")

    def _go(self, given: str) -> None:
        app = cast("AiddConsole", self.app)
        app.run_worker(_open_task(app, given), group="go-to-task", exit_on_error=False)


async def _open_task(app: AiddConsole, given: str) -> None:
    """Ask the coordinator for the one task that starts with `given` and open it, or say why not."""
    try:
        task = await app.client.task(given)
    except ApiError as exc:
        app.notify(f"{keys.GO_TO_TASK} {plain(given, 40)}: {exc}", severity="warning", markup=False)
        return
    await app.push_screen(TaskDetailScreen(task.id))
