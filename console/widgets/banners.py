"""Banners under the top bar: the demo notice, the embedded coordinator's start, and the coordinator's trouble
(slow, down, degraded)."""

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


class StartingBanner(Static):
    """The panes' placeholder while the embedded coordinator starts; hidden once it answers."""

    def on_mount(self) -> None:
        self.watch(self.app, "starting", self._show)

    def _show(self, starting: str) -> None:
        self.update(Text(f"The embedded coordinator is {starting.removesuffix('…')}: the panes fill in once it "
                         "answers (keys work meanwhile)."))
        self.display = bool(starting)
