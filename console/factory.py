"""The one way to build the console: used by `aidd`, the tests, the screenshot script and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiddclient.client import CoordinatorClient
from console.app import AiddConsole
from console.options import AnimationLevel, ConsoleOptions, QuitMode
from console.text import Clock, utcnow

if TYPE_CHECKING:
    from console.localagent import LocalAgent
    from console.startup import EmbeddedStart


def make_app(client: CoordinatorClient, *, where: str = "", read_only: bool = False, demo: bool = False,
             now: Clock = utcnow, refresh_s: float = 1.0, animation_level: AnimationLevel = "full",
             state_dir: Path | None = None, theme: str | None = None, notices: Sequence[str] = (),
             local_agent: LocalAgent | None = None, quit_mode: QuitMode = "attached",
             freeze_gc: bool = False, startup: EmbeddedStart | None = None,
             export_dir: Path | None = None) -> AiddConsole:
    """The console over `client` (embedded or attached: the same interface).

    Args:
        client: the coordinator's HTTP client; every read and action goes through it.
        where: what the top bar says about the coordinator.
        read_only: hide the keys that change tasks or workers.
        demo: show the demo banner.
        now: the clock ages are computed with (fixed in tests and screenshots).
        refresh_s: pause between the end of one poll and the next.
        animation_level: Textual's animations; "none" for deterministic screenshots.
        state_dir: where the chosen theme is remembered; None: nowhere.
        theme: the theme to start with (default: the remembered one, else dark).
        notices: messages shown once the console is up.
        local_agent: a local agent process to watch (its exit is reported).
        quit_mode: what `q` asks first: `attached` nothing, `embedded` (when tasks run) or `background` whether
            the work goes on without the console.
        freeze_gc: once up, freeze the garbage collector's long-lived objects (the `aidd` command does).
        startup: the embedded coordinator coming up; the console replaces `client` with its client once it
            answers, and polls nothing before.
        export_dir: where batch results are exported (`e` in the Batches pane); None: the current directory.
    """
    options = ConsoleOptions(where=where, read_only=read_only, demo=demo, now=now, refresh_s=refresh_s,
                             animation_level=animation_level, state_dir=state_dir, theme=theme,
                             notices=list(notices), quit_mode=quit_mode, freeze_gc=freeze_gc,
                             startup=startup, export_dir=export_dir)
    return AiddConsole(client, options, local_agent=local_agent)
