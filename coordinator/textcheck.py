"""Text that PostgreSQL cannot store (NUL bytes, lone surrogates) is refused or replaced before it gets there, and
text from tasks is made printable before a terminal sees it (no escape sequences, no control characters)."""

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


_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: titles, hyperlinks, clipboard writes (BEL or ST terminated)
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[@-Z\\-_]?"  # other two-byte escapes, or a lone ESC
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"  # C0/C1 controls, bidi overrides
)


def printable(text: str, one_line: bool = True) -> str:
    """`text` (from a task: a name, an error, a log line) safe for a terminal: escape sequences and control
    characters removed, tabs as spaces, and, `one_line`, line breaks as spaces."""
    text = text.replace("\t", "    ")
    if one_line:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _ESCAPES.sub("", text)
