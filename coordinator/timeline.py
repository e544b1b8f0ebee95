"""A task's timeline (k9s `describe` events): what happened to it, in order, read from what is already kept.

Submission, leases, starts and ends come from the task and its attempts (no extra write for them); an attempt's
retry due time is kept on the attempt by the same update that ends it; operator actions are the `task_events`
rows their transactions write. While it waited, the reasons of its queue shape as the leader recorded them
(`coordinator.reasonhistory`: a row per change of a shape, never per task); the current pending reason closes the
timeline of a waiting task, unless the recorded reason in force says the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiddwire import EndReason
from coordinator.pending import PendingReason
from coordinator.states import FINISHED, Action, TaskStatus

ACTION_WORDS = {Action.CANCEL: "cancelled", Action.RETRY: "retried", Action.REQUEUE: "requeued"}
BACK_TO_QUEUE = (Action.RETRY, Action.REQUEUE)
"""Operator actions that put a task back in its queue."""


def _event(at: datetime | None, kind: str, text: str, **fields: Any) -> dict[str, Any] | None:
    return None if at is None else {"at": at, "kind": kind, "text": text, **fields}


def _first_line(text: str | None, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


def attempt_events(a: Any) -> list[dict[str, Any] | None]:
    """Lease, start, end (with its reason) and the retry it led to, of one attempt row (with `hostname`)."""
    host = a.hostname or (str(a.worker_id) if a.worker_id else "?")
    gpus = f" GPUs {','.join(map(str, a.gpus))}" if a.gpus else ""
    common = {"attempt": a.number, "worker_id": a.worker_id}
    ended = None
    if a.ended_at is not None:
        why = a.end_reason or "ended"
        detail = [f"exit {a.exit_code}"] if a.exit_code not in (None, 0) else []
        if a.error and a.end_reason != EndReason.SUCCEEDED:
            detail.append(_first_line(a.error))
        ended = _event(a.ended_at, "ended", f"attempt {a.number} {why}" + (f": {'; '.join(detail)}" if detail else ""),
                       reason=a.end_reason, **common)
    retry = _event(a.ended_at if a.retry_at else None, "retry",
                   f"retry due at {a.retry_at.isoformat(timespec='seconds')}" if a.retry_at else "",
                   due_at=a.retry_at, **common)
    return [_event(a.leased_at, "leased", f"attempt {a.number} leased by {host}{gpus}", **common),
            _event(a.started_at, "started", f"attempt {a.number} started on {host}", **common),
            ended, retry]


def waits(task: Any, attempts: Sequence[Any], actions: Sequence[Any], now: datetime) -> list[tuple[datetime, datetime]]:
    """When the task waited in its queue, oldest first: from its submission, each retry coming due (or an attempt's
    end without a backoff) and each operator retry or requeue, to the next lease, its end, or now."""
    starts = [task.created_at, *(act.at for act in actions if act.kind in BACK_TO_QUEUE)]
    for i, a in enumerate(attempts):
        start = a.retry_at or a.ended_at
        leased_next = attempts[i + 1].leased_at if i + 1 < len(attempts) else None
        if start is not None and (leased_next is None or leased_next >= start):
            starts.append(start)  # not a backoff an operator's requeue cut short
    ends = [a.leased_at for a in attempts if a.leased_at is not None]
    if task.status in FINISHED and task.finished_at is not None:
        ends.append(task.finished_at)
    spans: list[tuple[datetime, datetime]] = []
    for start in sorted(s for s in starts if s is not None):
        end = min((e for e in ends if e >= start), default=now if task.status == TaskStatus.PENDING else start)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        elif end > start:
            spans.append((start, end))
    return spans


def reason_events(spans: Sequence[tuple[datetime, datetime]], changes: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Why the task waited during each span: its shape's reason in force when the span began (at that time), then
    each change within it. `changes` are rows (code, message, at), oldest first; a row without a code (the shape was
    not watched) says nothing."""
    events: list[dict[str, Any] | None] = []
    for start, end in spans:
        in_force = [c for c in changes if c.at <= start][-1:]
        for at, c in [*((start, c) for c in in_force), *((c.at, c) for c in changes if start < c.at < end)]:
            if c.code:
                events.append(_event(at, "reason", f"waiting: {c.message}", code=c.code))
    return events


def build(task: Any, attempts: Sequence[Any], actions: Sequence[Any], reason: PendingReason | None,
          now: datetime, spans: Sequence[tuple[datetime, datetime]] = (),
          changes: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The task's events, oldest first (ties keep the order they happen in: a lease before its start); `changes`
    are its shape's reason rows (`reasonhistory.changes`) over the `spans` it waited (`waits`)."""
    by = f" by {task.submitted_by}" if task.submitted_by else ""
    events: list[dict[str, Any] | None] = [
        _event(task.created_at, "submitted", f"submitted{by} (priority {task.priority}, group {task.group})",
               actor=task.submitted_by or None)]
    for a in attempts:
        events += attempt_events(a)
    for act in actions:
        word = ACTION_WORDS.get(act.kind, act.kind)
        was = (act.detail or {}).get("from")
        events.append(_event(act.at, "operator", f"{word} by {act.actor or 'someone'}"
                             + (f" (was {was})" if was else ""), actor=act.actor, action=act.kind))
    if task.status in FINISHED and task.finished_at is not None:
        events.append(_event(task.finished_at, "finished", f"{task.status}"
                             + (f" ({task.end_reason})" if task.end_reason and task.end_reason != task.status else ""),
                             status=task.status))
    recorded = [e for e in reason_events(spans, changes) if e is not None]
    events += recorded
    if reason is not None:
        text = f"waiting: {reason.message}"
        in_force = [(e["code"], e["text"]) for e in recorded if spans and e["at"] >= spans[-1][0]][-1:]
        if in_force != [(reason.code.value, text)]:  # else the reason in force says so, since it took effect
            events.append(_event(now, "waiting", text, code=reason.code.value))
    ordered = [e for e in events if e is not None]
    return sorted(ordered, key=lambda e: e["at"])  # stable: equal times keep their order
