"""Text that PostgreSQL cannot store (NUL bytes, lone surrogates) is refused or replaced before it gets there."""

from __future__ import annotations

import re
from typing import Any

from coordinator.errors import InvalidInput

_BAD = re.compile("[\x00\ud800-\udfff]")
MAX_DEPTH = 32


def _problem(text: str) -> str | None:
    match = _BAD.search(text)
    if match is None:
        return None
    return "contains a NUL byte" if match.group() == "\x00" else "contains a lone surrogate"


def check_text(value: Any, path: str, depth: int = 0) -> None:
    """Raise InvalidInput naming the path of the first string (or key) PostgreSQL would refuse."""
    if depth > MAX_DEPTH:
        raise InvalidInput(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        problem = _problem(value)
        if problem:
            raise InvalidInput(path, problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{path}.<key>", depth + 1)
            check_text(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{path}[{i}]", depth + 1)


def clean_line(line: str, max_bytes: int) -> str:
    """A log line safe to store: bad characters replaced, cut to `max_bytes` of UTF-8 with a marker."""
    line = _BAD.sub("\ufffd", line)
    encoded = line.encode()
    if len(encoded) <= max_bytes:
        return line
    return encoded[:max_bytes].decode(errors="ignore") + " …[cut]"
