"""Operator actions on tasks: say what will happen to how many, ask, call the coordinator, report the outcome.

Used by the Tasks pane, the task detail and the Batches pane; always from a Textual worker (the
confirmation is awaited with `push_screen_wait`, the API calls are async).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiddclient.client import ApiError
from aiddclient.views import TaskView
from console.query import TaskQuery
from console.screens.confirm import ConfirmModal
from console.text import plain, short_id
from coordinator.states import ALLOWED_FROM, Action

if TYPE_CHECKING:
    from console.app import AiddConsole


@dataclass(frozen=True)
class Wording:
    """How an action is spoken of: for many tasks, and for one task by its status."""

    verb: str
    past: str
    allowed: str
    consequence: str
    single: dict[str, str]
    skipped: str
    """Why tasks were left as they were."""


WORDING: dict[str, Wording] = {
    "cancel": Wording("Cancel", "Cancelled", "pending or running",
                      "Pending tasks will not run; running ones are killed on their host.",
                      {"pending": "It will not run.", "running": "It is running: its process is killed on its host."},
                      "no longer pending or running"),
    "retry": Wording("Retry", "Retried", "finished (failed, timeout, cancelled or succeeded)",
                     "They go back to their queue as pending, with a fresh retry budget.",
                     {"*": "It goes back to its queue as pending, with a fresh retry budget."}, "not finished"),
    "requeue": Wording("Requeue", "Requeued", "running (or pending in a retry backoff)",
                       "Running ones are stopped on their host and queued again (the attempt counts); pending ones "
                       "waiting out a retry backoff are queued now; pending ones already queued stay as they are.",
                       {"pending": "If it waits out a retry backoff it is queued now; if it is already queued, "
                                   "nothing changes.",
                        "running": "It is stopped on its host and queued again (the attempt counts)."},
                       "not running, or already queued"),
}

def allowed_statuses(action: str) -> frozenset[str]:
    """The task statuses `action` can change (from the coordinator's transition table)."""
    return frozenset(s.value for s in ALLOWED_FROM[Action(action)])


def task_label(task: TaskView) -> str:
    """A task named for a dialog: `3f2a9c1e "ADMET prediction"`."""
    name = plain(task.name, 40)
    return short_id(task.id) + (f' "{name}"' if name else "")


def plural(count: int, noun: str = "task") -> str:
    """`1 task`, `3 tasks`."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}".replace(",", " ")


NAMES_SHOWN = 5
"""Selected tasks listed by name in a confirmation; the rest are counted."""


@dataclass(frozen=True)
class Target:
    """What an action applies to: explicit task ids (one task or a selection) or every task matching a query."""

    label: str
    """How the tasks are named in the dialog, e.g. `task 3f2a9c1e "ADMET prediction"` or `the 3 tasks selected`."""
    ids: tuple[str, ...] = ()
    query: TaskQuery | None = None
    statuses: tuple[str, ...] = ()
    """The known statuses of the ids (to say up front how many will change)."""
    names: tuple[str, ...] = ()
    """How each selected task is shown in the dialog (`3f2a9c1e ADMET prediction (running)`)."""
    attempt_id: str | None = None
    """For one task: the attempt the operator was looking at (the action applies only while it is current)."""


class TaskActionKeys:
    """The cancel / retry / requeue actions of a screen that acts on tasks; each starts the screen's `act`."""

    def act(self, action: str) -> object:
        """Confirm and perform `action` on what the screen points at (a Textual worker)."""
        raise NotImplementedError

    def action_cancel(self) -> None:
        self.act("cancel")

    def action_retry(self) -> None:
        self.act("retry")

    def action_requeue(self) -> None:
        self.act("requeue")


async def run_task_action(app: AiddConsole, action: str, target: Target) -> bool:
    """Confirm and perform `action` on `target`; toast the outcome. Returns whether anything was sent."""
    words = WORDING[action]
    try:
        plan = await _plan(app, action, target)
        if plan is None:
            return False
        body, button = plan
        if not await app.push_screen_wait(ConfirmModal(f"{words.verb} tasks", body, button)):
            return False
        changed, skipped = await _send(app, action, target)
    except ApiError as exc:
        severity: Literal["warning", "error"] = "warning" if exc.status == 409 else "error"
        app.notify(f"{words.verb}: nothing changed: {exc}" if exc.status == 409 else f"{words.verb} failed: {exc}",
                   severity=severity, markup=False)
        return False
    message = f"{words.past} {plural(changed)}"
    if skipped:
        message += f"; {plural(skipped)} skipped ({words.skipped})"
    app.notify(message, severity="information" if changed else "warning", markup=False)
    return True


async def _count(app: AiddConsole, query: TaskQuery, statuses: frozenset[str]) -> int:
    return (await app.client.tasks(page=1, page_size=1, **query.narrowed(statuses).list_params())).total


async def _plan(app: AiddConsole, action: str, target: Target) -> tuple[str, str] | None:
    """The confirmation's text and button, or None (after saying why) when nothing would change."""
    words = WORDING[action]
    allowed = allowed_statuses(action)
    query = target.query
    if query is not None:
        matching = "" if query.empty else f" matching {query.describe()}"
        if action == "requeue":
            running = await _count(app, query, frozenset({"running"}))
            pending = await _count(app, query, frozenset({"pending"}))
            if not running and not pending:
                app.notify(f"No running or pending task{matching}: nothing to requeue.", severity="warning",
                           markup=False)
                return None
            body = (f"Requeue the {plural(running)}{matching} that {'is' if running == 1 else 'are'} running? "
                    "They are stopped on their host and queued again (the attempt counts).")
            if pending:
                body += (f" Of the {pending} pending {'one' if pending == 1 else 'ones'}, those waiting out a retry "
                         "backoff are queued now; the others are already queued and stay as they are.")
            return body, f"Requeue {plural(running)}" if not pending else "Requeue"
        count = await _count(app, query, allowed)
        if count == 0:
            app.notify(f"No task{matching} is {words.allowed}: nothing to {action}.", severity="warning",
                       markup=False)
            return None
        every = f"all {plural(count)}" if query.empty else f"the {plural(count)}"
        return f"{words.verb} {every}{matching} that are {words.allowed}? {words.consequence}", \
            f"{words.verb} {plural(count)}"
    changeable = [s for s in target.statuses if s in allowed]
    if target.statuses and not changeable:
        state = target.statuses[0] if len(set(target.statuses)) == 1 else "in other states"
        hint = " Use R to requeue it." if action == "retry" and state in ("pending", "running") else ""
        app.notify(f"Cannot {action} {target.label}: it is {state}; {action} applies to {words.allowed} "
                   f"tasks.{hint}", severity="warning", markup=False)
        return None
    if len(target.ids) == 1 and len(target.statuses) == 1:
        detail = words.single.get(target.statuses[0], words.single.get("*", ""))
        return f"{words.verb} {target.label}? {detail}", f"{words.verb} 1 task"
    body = f"{words.verb} {target.label}? {words.consequence}"
    skipped = len(target.ids) - len(changeable) if target.statuses else 0
    if skipped:
        body += f" {plural(skipped)} of them {'is' if skipped == 1 else 'are'} not {words.allowed} and will be skipped."
    if target.names:
        shown = "\n".join(f"  {name}" for name in target.names[:NAMES_SHOWN])
        more = len(target.names) - NAMES_SHOWN
        body += "\n\n" + shown + (f"\n  … and {more} more" if more > 0 else "")
    return body, f"{words.verb} {plural(len(target.ids) - skipped)}"


async def _send(app: AiddConsole, action: str, target: Target) -> tuple[int, int]:
    """Perform the action; (changed, skipped)."""
    if target.query is not None:
        result = await app.client.act(action, filter=target.query.action_filter(allowed_statuses(action)))
    elif len(target.ids) == 1:
        await app.client.act_on(action, target.ids[0], target.attempt_id)
        return 1, 0
    else:
        result = await app.client.act(action, ids=list(target.ids))
    return int(result.get("changed", 0)), int(result.get("skipped", 0))
