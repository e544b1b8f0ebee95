"""Banners under the top bar: the demo notice and the coordinator's trouble (slow, down, degraded)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

DEMO_TEXT = "DEMO · workers demo-* are simulated: fake GPU telemetry, tasks do not really run · the coordinator is real"


class DemoBanner(Static):
    """A one-line notice that the cluster on screen is simulated."""

    def __init__(self) -> None:
        super().__init__(Text(DEMO_TEXT, no_wrap=True, overflow="ellipsis"))


class ProblemBanner(Static):
    """Says what is wrong with the coordinator connection; hidden while all is well."""

    def on_mount(self) -> None:
        self.watch(self.app, "problem", self._show)

    def _show(self, problem: str) -> None:
        self.update(Text(problem))
        self.display = bool(problem)
