"""`aidd show`, `aidd logs` and `aidd wait`: one task in full, its log, and waiting for tasks (for scripts)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TextIO

from aiddclient.client import ApiError, CoordinatorClient
from aiddclient.tables import render_table
from coordinator.states import DROPPED_STREAM, FINISHED, TaskStatus
from coordinator.textcheck import printable

POLL_S = 1.0
"""How often `logs --follow` and `wait` ask the coordinator again."""
LOG_PAGE = 1000
EXIT_NOT_ALL_SUCCEEDED = 1
EXIT_TIMED_OUT = 124
"""`wait` past its --timeout (the exit status of timeout(1))."""

FIELDS = ("id", "name", "service", "task_type", "status", "pending_reason", "priority", "group", "labels", "resources",
          "attempts", "worker_id", "gpus", "batch_id", "created_at", "started_at", "finished_at", "end_reason")
ATTEMPT_COLUMNS = ["number", "worker_id", "gpus", "started_at", "ended_at", "end_reason", "exit_code"]


def describe(task: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> str:
    """A task as `aidd show` prints it: its fields (why it waits, when pending), parameters, result or error, its
    attempts, then its timeline."""
    width = max(len(name) for name in (*FIELDS, "input_params"))
    reason = task.get("pending_reason") or {}
    shown = {**task, "pending_reason": f"{reason['code']}: {reason['message']}" if reason else None}
    lines = [f"{name:<{width}}  {_plain(shown[name])}" for name in FIELDS if shown.get(name) not in (None, "", [])]
    lines.append(f"{'input_params':<{width}}  {json.dumps(task.get('input_params'), default=str)}")
    if task.get("result") is not None:
        lines.append(f"{'result':<{width}}  {json.dumps(task['result'], default=str)}")
    if task.get("error"):
        lines += [f"{'error':<{width}}", printable(task["error"], one_line=False)]
    if task.get("attempt_history"):
        lines += ["", render_table(task["attempt_history"], ATTEMPT_COLUMNS)]
    if events:
        lines += ["", "timeline", render_table(events, ["at", "kind", "text"], max_width=160)]
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, default=str)  # JSON writes control characters as \u escapes
    return printable(", ".join(map(str, value)) if isinstance(value, list) else str(value))


async def print_logs(client: CoordinatorClient, task_id: str, follow: bool, out: TextIO | None = None,
                     err: TextIO | None = None, raw: bool = False) -> int:
    """Print the task's log, every attempt (its stdout lines to `out`, its stderr lines and the notes of lines
    the log cap dropped to `err`: this process's own by default); with `follow`, go on printing new lines until
    the task has finished. Lines are made printable (a task's escape sequences never reach the terminal) unless
    `raw`."""
    out, err = out or sys.stdout, err or sys.stderr
    after = 0
    while True:
        page = await client.logs(task_id, after=after, limit=LOG_PAGE)
        for line in page["lines"]:
            text = line["line"] if raw else printable(line["line"])
            (err if line["stream"] in ("stderr", DROPPED_STREAM) else out).write(text + "\n")  # a cap's note too
        out.flush()
        err.flush()
        after = page["next"]
        if len(page["lines"]) == LOG_PAGE:
            continue
        if not follow:
            return 0
        if (await client.get_task(task_id))["status"] in FINISHED:
            follow = False  # one more read: the lines that came with the final report
            continue
        await asyncio.sleep(POLL_S)


Counts = dict[str, int]
"""Tasks by status."""


def id_counter(client: CoordinatorClient, ids: Sequence[str]) -> Callable[[], Awaitable[Counts]]:
    """Counts of the given tasks (each unfinished one asked for again, finished ones remembered)."""
    status: dict[str, str] = {}

    async def count() -> Counts:
        for task_id in ids:
            if status.get(task_id) not in FINISHED:
                status[task_id] = (await client.get_task(task_id))["status"]
        return _tally(status.values())
    return count


def batch_counter(client: CoordinatorClient, batch_id: str) -> Callable[[], Awaitable[Counts]]:
    """Counts of a batch's tasks (one count per status, whatever the batch's size)."""
    async def count() -> Counts:
        totals = {s.value: (await client.list_tasks(page_size=1, batch_id=batch_id, status=[s.value]))["total"]
                  for s in TaskStatus}
        if not any(totals.values()):
            raise ApiError(f"batch {batch_id}: no tasks (is the id right?)", 404)
        return {s: n for s, n in totals.items() if n}
    return count


def _tally(statuses: Iterable[str]) -> Counts:
    counts: Counts = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


async def wait_for(count: Callable[[], Awaitable[Counts]], timeout_s: float | None,
                   progress: Callable[[Counts], None] | None = None) -> tuple[int, Counts]:
    """Wait until every task counted has finished; returns the exit status (0: all succeeded, 1: some did
    not, 124: `timeout_s` passed first) and the last counts."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        counts = await count()
        if progress is not None:
            progress(counts)
        if all(status in FINISHED for status in counts):
            return (0 if set(counts) <= {TaskStatus.SUCCEEDED} else EXIT_NOT_ALL_SUCCEEDED), counts
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_TIMED_OUT, counts
        await asyncio.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))


def summary(counts: Counts) -> str:
    """`3 tasks: 2 succeeded, 1 running`."""
    total = sum(counts.values())
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{total} task{'' if total == 1 else 's'}: {parts}"
