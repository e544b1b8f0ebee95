"""Turning coordinator data into safe, compact text: escapes stripped, never markup, ages, bars, sparklines.

Everything a task controls (its name, parameters, logs, errors) passes through `plain` before it is shown:
terminal escape sequences and control characters are removed, and the result is used as a rich `Text`
(or with `markup=False`), so `[bold]` in a task name is shown as typed, never interpreted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.style import Style
from rich.text import Text

from coordinator.textcheck import printable

Clock = Callable[[], datetime]

SPARK_CHARS = "▁▂▃▄▅▆▇█"
MISSING = "\u2013"
"""Shown for an unknown value (an en dash)."""
CELLS_KEPT = 16_384
"""Distinct cells kept for sharing (`cell`): a few screens of a 500-host table's distinct texts."""


def utcnow() -> datetime:
    """The default clock: timezone-aware now."""
    return datetime.now(UTC)


def plain(value: Any, limit: int | None = None, one_line: bool = True) -> str:
    """`value` as printable text: escapes and control characters removed, optionally one line and cut."""
    text = printable("" if value is None else str(value), one_line)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def cell(value: Any, style: Style | str = "", limit: int | None = None, justify: str = "left") -> Text:
    """A table cell: plain text (never markup), with an optional style.

    Equal cells are one shared object, so never change a cell in place: a refresh that rebuilds a row (every
    heartbeat rebuilds a worker's) gets its unchanged cells back identical, and the table's diff passes them
    over without comparing their text.
    """
    return _cell(plain(value, limit), style, justify)


@functools.lru_cache(maxsize=CELLS_KEPT)
def _cell(text: str, style: Style | str, justify: str) -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis", justify=justify)  # type: ignore[arg-type]


def number(value: Any, style: Style | str = "") -> Text:
    """A right-aligned count with thin thousands separators."""
    try:
        shown = f"{int(value):,}".replace(",", " ")
    except (TypeError, ValueError):
        shown = MISSING
    return Text(shown, style=style, justify="right", no_wrap=True)


def short_id(value: Any) -> str:
    """The first 8 characters of a UUID: enough to tell tasks apart on one screen."""
    return str(value or "")[:8]


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp from the API (or a datetime) as an aware datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_since(value: Any, now: datetime) -> float | None:
    """Seconds from the timestamp `value` to `now` (never negative), or None."""
    when = parse_time(value)
    return None if when is None else max(0.0, (now - when).total_seconds())


def age(seconds: float | None) -> str:
    """A compact duration like k9s shows it: 45s, 12m, 3h04m, 2d05h (a dash when unknown)."""
    if seconds is None:
        return MISSING
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def bar(fraction: float, width: int) -> tuple[str, str]:
    """A horizontal bar of `width` cells for `fraction` (0..1): (filled part, empty part)."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    if fraction > 0 and filled == 0:
        filled = 1
    return "█" * filled, "░" * (width - filled)


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last `width` values as block characters; the scale tops at `top` (default: the largest value)."""
    shown = list(values)[-width:]
    if not shown:
        return ""
    peak = top if top is not None else max(shown)
    if peak <= 0:
        return SPARK_CHARS[0] * len(shown)
    last = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[min(last, max(0, round(v / peak * last)))] for v in shown)


def gigabytes(value: Any) -> str:
    """A memory size in GB, compact: 7.5G, 80G, 1.5T."""
    try:
        gb = float(value)
    except (TypeError, ValueError):
        return MISSING
    if gb >= 1000:
        return f"{gb / 1024:.1f}T"
    return f"{gb:.1f}G" if gb < 10 and gb != int(gb) else f"{gb:.0f}G"


def file_size(size: Any) -> str:
    """Bytes for people: 0 B, 512 B, 4.0 KiB, 12.3 MiB, 1.5 GiB."""
    if not isinstance(size, int | float):
        return MISSING
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return MISSING
