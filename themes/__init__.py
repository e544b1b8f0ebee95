"""The console's colour themes: every colour the console shows is defined in this package and nowhere else.

Each theme is a `textual.theme.Theme`. Besides Textual's base colours it defines the semantic variables in
`SEMANTIC`, used by the console's stylesheet (as `$status-failed`, ...) and by its tables (through
`console.palette.Palette`).
"""

from __future__ import annotations

from textual.theme import Theme

from themes.dark import DARK
from themes.high_contrast import HIGH_CONTRAST
from themes.light import LIGHT

THEMES: tuple[Theme, ...] = (DARK, LIGHT, HIGH_CONTRAST)
"""The themes `t` cycles through, in order."""

DEFAULT_THEME = DARK.name

SEMANTIC: tuple[str, ...] = (
    "status-pending", "status-running", "status-succeeded", "status-failed", "status-cancelled", "status-timeout",
    "worker-online", "worker-draining", "worker-offline",
    "meter-low", "meter-mid", "meter-high", "meter-track", "spark", "selected", "muted",
    "banner-demo", "banner-problem",
)
"""Variables every theme defines (a test checks it)."""

SEMANTIC_DEFAULTS: dict[str, str] = dict(DARK.variables)
"""Used for any theme that lacks the semantic variables (e.g. one of Textual's built-in themes)."""


def theme_names() -> list[str]:
    """Names of the console's themes, in cycling order."""
    return [t.name for t in THEMES]
