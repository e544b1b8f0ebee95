"""Object keys of task files, chosen by the coordinator, and the check on names clients and agents give.

Layout: `tasks/{task_id}/inputs/NAME` for submitted inputs, `tasks/{task_id}/attempts/{n}/outputs/PATH`
for what attempt number n uploaded. NAME and PATH are relative paths with `/` between parts.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from coordinator.errors import InvalidInput

MAX_NAME_CHARS = 255
TASKS = "tasks/"
_DRIVE = re.compile(r"^[A-Za-z]:")
_KEY = re.compile(r"^tasks/([0-9a-f-]{36})/(?:inputs/(.+)|attempts/([1-9][0-9]{0,5})/outputs/(.+))$")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a file name (a relative path), or None when it can."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if name.startswith("/") or _DRIVE.match(name):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return "contains a control character"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' path segment"
    return None


def check_name(name: str, field: str) -> str:
    """`name` when it is a safe relative path, else a 422 naming `field`."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInput(field, f"file name {name!r} {problem}")
    return name


def task_prefix(task_id: uuid.UUID | str) -> str:
    """Every file of one task lives under this prefix."""
    return f"{TASKS}{task_id}/"


def input_key(task_id: uuid.UUID | str, name: str) -> str:
    """Where a submitted input file is stored."""
    return f"{TASKS}{task_id}/inputs/{name}"


def outputs_prefix(task_id: uuid.UUID | str, attempt: int) -> str:
    """Where the outputs of attempt number `attempt` are stored."""
    return f"{TASKS}{task_id}/attempts/{attempt}/outputs/"


def output_key(task_id: uuid.UUID | str, attempt: int, path: str) -> str:
    """Where one output file of an attempt is stored."""
    return outputs_prefix(task_id, attempt) + path


@dataclass(frozen=True)
class ParsedKey:
    """What a task-file key says: whose file, input or output of which attempt, and its relative name."""

    task_id: uuid.UUID
    name: str
    attempt: int | None = None


def parse_key(key: str) -> ParsedKey | None:
    """The parts of a task-file key, or None when `key` is not one (or its name is not safe)."""
    match = _KEY.match(key)
    if match is None:
        return None
    try:
        task_id = uuid.UUID(match.group(1))
    except ValueError:
        return None
    name = match.group(2) or match.group(4)
    if name_problem(name) is not None:
        return None
    return ParsedKey(task_id, name, int(match.group(3)) if match.group(3) else None)
