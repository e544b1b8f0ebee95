"""Rich styles for table cells, resolved from the current theme's variables (no colour is written here)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError

from console.text import CELLS_KEPT, bar


class Palette:
    """Styles for statuses, meters and sparklines, taken from the theme's semantic variables."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        self._cache: dict[str, Style] = {}

    def style(self, name: str, bold: bool = False) -> Style:
        """The foreground style of a theme variable (plain when the theme lacks it)."""
        key = f"{name}:{bold}"
        if key not in self._cache:
            value = self._variables.get(name)
            try:
                color = Color.parse(value).rich_color if value else None
            except ColorParseError:
                color = None
            self._cache[key] = Style(color=color, bold=bold)
        return self._cache[key]

    def status(self, status: str) -> Style:
        """The style of a task status (pending, running, ...) or a worker status (online, ...)."""
        prefix = "worker" if status in ("online", "draining", "offline") else "status"
        return self.style(f"{prefix}-{status}", bold=status in ("running", "failed", "timeout"))

    def level(self, fraction: float) -> Style:
        """Low / mid / high colouring of a utilisation between 0 and 1."""
        return self.style("meter-low" if fraction < 0.6 else "meter-mid" if fraction < 0.85 else "meter-high")

    def meter(self, fraction: float, width: int, label: str = "") -> Text:
        """A coloured bar with a label after it, e.g. `████░░ 67%`; equal meters are one shared object (see
        `console.text.cell`)."""
        filled, empty = bar(fraction, width)
        return _meter(filled, empty, self.level(fraction), self.style("meter-track"), label)

    def segments(self, parts: list[tuple[int, str]], total: int, width: int) -> Text:
        """A bar split into coloured parts (count, status), e.g. a batch's succeeded / failed / running."""
        text = Text(no_wrap=True)
        used = 0
        for count, status in parts:
            cells = round(width * count / total) if total else 0
            cells = min(cells, width - used)
            if count and cells == 0 and used < width:
                cells = 1
            text.append("█" * cells, self.status(status))
            used += cells
        text.append("░" * (width - used), self.style("meter-track"))
        return text


@functools.lru_cache(maxsize=CELLS_KEPT)
def _meter(filled: str, empty: str, level: Style, track: Style, label: str) -> Text:
    text = Text(no_wrap=True)
    text.append(filled, level)
    text.append(empty, track)
    if label:
        text.append(" " + label)
    return text
