"""A sink that records what task runs report: the agent's reporter, without a coordinator."""

from __future__ import annotations

from typing import Any


class Sink:
    """Collects the events and log lines of `nodeagent.runner.TaskRun`s."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lines: dict[str, list[tuple[str, str]]] = {}

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def log(self, task_id: str, attempt_id: str, stream: str, line: str) -> None:
        self.lines.setdefault(task_id, []).append((stream, line))

    def final(self, task_id: str) -> dict[str, Any]:
        """The one event that ended `task_id`'s attempt."""
        [event] = [e for e in self.events if e["task_id"] == task_id and e["event"] in ("succeeded", "failed")]
        return event
