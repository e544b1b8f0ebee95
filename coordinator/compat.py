"""Compatibility profiles: how a client of an older system sees our tasks, chosen per API key.

Our own clients see our status words; an AIFlow SDK polls until `SUCCESS`, `FAILED` or `TIMEOUT`, an
LLM-scheduler client reads `Completed`. A key's profile changes only the words in the task answers it gets, never
what is stored or what other keys see.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from coordinator.states import TaskStatus


class Profile(StrEnum):
    """Whose vocabulary a client speaks."""

    AIDD = "aidd"
    AIFLOW = "aiflow"
    LLM = "llm"


STATUS_WORDS: dict[Profile, dict[TaskStatus, str]] = {
    Profile.AIFLOW: {TaskStatus.PENDING: "PENDING", TaskStatus.RUNNING: "PROCESSING",
                     TaskStatus.SUCCEEDED: "SUCCESS", TaskStatus.FAILED: "FAILED", TaskStatus.TIMEOUT: "TIMEOUT",
                     TaskStatus.CANCELLED: "FAILED"},
    Profile.LLM: {TaskStatus.PENDING: "Pending", TaskStatus.RUNNING: "Running", TaskStatus.SUCCEEDED: "Completed",
                  TaskStatus.FAILED: "Failed", TaskStatus.TIMEOUT: "Failed", TaskStatus.CANCELLED: "Cancelled"},
}
"""Each older system's word for each of our states (AIFlow has no cancelled: its SDK stops polling on FAILED)."""


def present(profile: Profile, task: dict[str, Any]) -> dict[str, Any]:
    """A task view in the profile's words, with `task_id` beside `id` (the name those clients read)."""
    if profile == Profile.AIDD:
        return task
    return {**task, "task_id": task["id"], "status": STATUS_WORDS[profile][TaskStatus(task["status"])]}

