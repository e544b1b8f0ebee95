"""Which tasks the Tasks pane shows: a filter that maps onto the API's list and bulk-action parameters."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from console.text import plain, short_id

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled", "timeout")
SORTS = ("created_at", "priority", "status", "service", "name", "started_at", "finished_at")
"""Columns the coordinator can sort tasks by, in the order `s` cycles through them."""


@dataclass(frozen=True)
class TaskQuery:
    """A task filter: every part is optional; empty means every task."""

    status: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    group: tuple[str, ...] = ()
    text: str = ""
    """Case-insensitive text in any column the Tasks table shows, or in the parameters (`TaskFilter.search`)."""
    batch_id: str | None = None
    batch_name: str = ""
    worker_id: str | None = None
    worker_name: str = ""
    reason: tuple[str, ...] = ()
    """Pending tasks waiting for one of these reason codes (`no_group`, `busy`, ...; see `ReasonCode`)."""

    @property
    def empty(self) -> bool:
        """Whether the query matches every task."""
        return not (self.status or self.service or self.group or self.text or self.batch_id or self.worker_id
                    or self.reason)

    def list_params(self) -> dict[str, Any]:
        """Keyword arguments of `CoordinatorClient.list_tasks`."""
        params: dict[str, Any] = {"status": list(self.status), "service": list(self.service),
                                  "group": list(self.group), "q": self.text, "batch_id": self.batch_id,
                                  "worker_id": self.worker_id, "pending_reason": list(self.reason)}
        return {k: v for k, v in params.items() if v}

    def action_filter(self, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        """The bulk-action filter, narrowed to the statuses an action can change."""
        statuses = list(self.status) if self.status else list(STATUSES)
        if allowed is not None:
            statuses = [s for s in statuses if s in allowed]
        flt: dict[str, Any] = {"status": statuses, "service": list(self.service), "group": list(self.group),
                               "search": self.text, "batch_id": self.batch_id, "worker_id": self.worker_id,
                               "pending_reason": list(self.reason)}
        return {k: v for k, v in flt.items() if v}

    def narrowed(self, allowed: frozenset[str]) -> TaskQuery:
        """This query limited to statuses in `allowed` (to count what an action will change)."""
        statuses = self.status or STATUSES
        return replace(self, status=tuple(s for s in statuses if s in allowed))

    def describe(self) -> str:
        """The filter in one line for people, e.g. `status failed,timeout · service docking · "egfr"`."""
        parts = []
        if self.status:
            parts.append("status " + ",".join(self.status))
        if self.service:
            parts.append("service " + ",".join(self.service))
        if self.group:
            parts.append("group " + ",".join(self.group))
        if self.batch_id:
            parts.append("batch " + plain(self.batch_name or short_id(self.batch_id), 40))
        if self.worker_id:
            parts.append("worker " + plain(self.worker_name or short_id(self.worker_id), 40))
        if self.reason:
            parts.append("waiting: " + ",".join(self.reason))
        if self.text:
            parts.append(f'"{plain(self.text, 40)}"')
        return " · ".join(parts) if parts else "all tasks"
