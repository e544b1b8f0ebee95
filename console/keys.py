"""Every key of the console in one place: the bindings of the app and of each screen, and the help built from them.

The footer shows the bindings with `show=True`; the `?` screen and the README's keyboard table list them all
(a test checks the README against `help_rows`).
"""

from __future__ import annotations

from textual.binding import Binding

DESTRUCTIVE = frozenset({"cancel", "retry", "requeue", "drain", "new", "retry_failed", "remove_worker",
                         "pause_service", "service_limit"})
"""Actions hidden by `--read-only` (they change tasks or workers)."""

APP: list[Binding] = [
    Binding("question_mark", "help", "Help", tooltip="Show every key"),
    Binding("ctrl+p", "command_palette", "Palette", show=False, priority=True,
            tooltip="Command palette: every action by name"),
    Binding("colon", "command_palette", "Palette", show=False,
            tooltip="Command palette (like ctrl+p); type a task id or its start to go to that task"),
    Binding("1", "switch_mode('queues')", "Queues", show=False, tooltip="Queues pane"),
    Binding("2", "switch_mode('workers')", "Workers", show=False, tooltip="Workers pane"),
    Binding("3", "switch_mode('tasks')", "Tasks", show=False, tooltip="Tasks pane"),
    Binding("4", "switch_mode('batches')", "Batches", show=False, tooltip="Batches pane"),
    Binding("n", "new", "New", tooltip="Submit a new task, or a batch from a file"),
    Binding("t", "next_theme", "Theme", show=False, tooltip="Next colour theme (remembered)"),
    Binding("q", "quit", "Quit", tooltip="Quit; with tasks running, first asks: keep them running in the background, "
            "or stop everything"),
]

TABLE: list[Binding] = [
    Binding("j", "cursor_down", "Down", tooltip="Cursor down (also the down arrow)"),
    Binding("k", "cursor_up", "Up", tooltip="Cursor up (also the up arrow)"),
    Binding("g", "scroll_top", "First", tooltip="First row"),
    Binding("home", "scroll_top", "First", tooltip="First row"),
    Binding("G", "scroll_bottom", "Last", tooltip="Last row"),
    Binding("end", "scroll_bottom", "Last", tooltip="Last row"),
]
"""Moving in every table (also arrows, page up / page down)."""

FILTER_ROWS = Binding("slash", "filter_rows", "Filter", tooltip="Show only the rows holding a text (any column)")
"""`/` on the panes whose rows are all on screen (the Tasks pane filters on the server instead)."""

GO_TO_TASK = "Go to task"
"""The palette's command for `:` followed by a task id or the start of one."""

TASKS: list[Binding] = [
    Binding("slash", "filter", "Filter", tooltip="Filter tasks by status, service, group, and text in any column "
            "or parameter (e.g. a SMILES)"),
    Binding("enter", "detail", "Detail", tooltip="Task detail: parameters, attempts, result, live log"),
    Binding("l", "logs", "Logs", tooltip="Task detail with the log maximised"),
    Binding("space", "toggle_select", "Select", tooltip="Select or unselect the task (bulk actions)"),
    Binding("a", "select_matching", "All", tooltip="Select every task matching the filter"),
    Binding("escape", "clear_selection", "Clear", show=False, tooltip="Clear the selection"),
    Binding("c", "cancel", "Cancel", tooltip="Cancel the selection or the task under the cursor"),
    Binding("r", "retry", "Retry", tooltip="Retry finished tasks (failed, timeout, cancelled, succeeded)"),
    Binding("R", "requeue", "Requeue", tooltip="Put pending or running tasks back in their queue"),
    Binding("s", "sort", "Sort", show=False, tooltip="Sort by the next column (or click a header)"),
    Binding("S", "reverse", "Reverse", show=False, tooltip="Reverse the sort order"),
    Binding("left_square_bracket", "page(-1)", "Prev page", show=False, tooltip="Previous page"),
    Binding("right_square_bracket", "page(1)", "Next page", show=False, tooltip="Next page"),
]

WORKERS: list[Binding] = [
    FILTER_ROWS,
    Binding("d", "drain", "Drain/resume", tooltip="Drain the worker (no new tasks) or resume it"),
    Binding("x", "remove_worker", "Remove", tooltip="Remove an offline worker from the view (asks first)"),
    Binding("enter", "worker_tasks", "Its tasks", tooltip="The tasks of the worker under the cursor"),
]

BATCHES: list[Binding] = [
    FILTER_ROWS,
    Binding("r", "retry_failed", "Retry failed", tooltip="Retry the failed and timed-out tasks of the batch"),
    Binding("enter", "batch_tasks", "Its tasks", tooltip="The tasks of the batch under the cursor"),
    Binding("e", "export", "Export", tooltip="Write the batch's results table (a row per molecule) to a CSV file"),
]

QUEUES: list[Binding] = [
    FILTER_ROWS,
    Binding("enter", "service_tasks", "Its tasks", tooltip="The tasks of the service under the cursor"),
    Binding("p", "pause_service", "Pause/resume", tooltip="Pause the service under the cursor (its pending tasks "
            "wait, running ones go on) or resume it"),
    Binding("m", "service_limit", "Limit", tooltip="Set how many of the service's tasks may run at once"),
]

FAILURES: list[Binding] = [
    Binding("enter", "failure_detail", "Detail", tooltip="Detail of the failed task under the cursor"),
]

DETAIL: list[Binding] = [
    Binding("escape", "back", "Back", tooltip="Back to the pane"),
    Binding("l", "toggle_log", "Log", tooltip="Maximise or restore the log"),
    Binding("f", "toggle_follow", "Follow", show=False, tooltip="Follow new log lines, or stop following"),
    Binding("c", "cancel", "Cancel", tooltip="Cancel this task"),
    Binding("r", "retry", "Retry", tooltip="Retry this task"),
    Binding("R", "requeue", "Requeue", tooltip="Requeue this task"),
]

MODAL: list[Binding] = [
    Binding("escape", "dismiss_modal", "Close", tooltip="Close the dialog without doing anything"),
]

SECTIONS: list[tuple[str, list[Binding]]] = [
    ("Everywhere", APP), ("Every table", TABLE), ("Tasks pane", TASKS), ("Workers pane", WORKERS),
    ("Batches pane", BATCHES),
    ("Queues pane", QUEUES), ("Recent failures (Queues pane)", FAILURES), ("Task detail", DETAIL),
]

_KEY_NAMES = {"question_mark": "?", "colon": ":", "slash": "/", "space": "space", "enter": "enter",
              "escape": "esc", "left_square_bracket": "[", "right_square_bracket": "]", "ctrl+p": "ctrl+p"}


def table_enter(bindings: list[Binding]) -> list[Binding]:
    """A section's enter key as the table's own binding (the table's built-in enter would hide it in the footer)."""
    enter = next(b for b in bindings if b.key == "enter")
    return [Binding("enter", "select_cursor", enter.description, tooltip=enter.tooltip)]


def key_label(key: str) -> str:
    """How a key is written for people: `slash` → `/`."""
    return _KEY_NAMES.get(key, key)


def help_rows(read_only: bool = False) -> list[tuple[str, str, str]]:
    """(section, key, what it does) for the help screen and the README, without destructive keys if read-only."""
    rows: list[tuple[str, str, str]] = []
    for section, bindings in SECTIONS:
        for binding in bindings:
            action = binding.action.split("(")[0]
            if read_only and action in DESTRUCTIVE:
                continue
            rows.append((section, key_label(binding.key), binding.tooltip or binding.description))
    return rows
