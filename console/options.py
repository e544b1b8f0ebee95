"""What the console is told at start: where it is connected, what it may do, and its switches for determinism."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from console.text import Clock, utcnow

if TYPE_CHECKING:
    from console.startup import EmbeddedStart

AnimationLevel = Literal["none", "basic", "full"]
QuitMode = Literal["attached", "embedded", "background"]


class QuitChoice(StrEnum):
    """How the operator left the console: what `console.launch` does next."""

    STOP = "stop"
    """Stop what this console runs (the coordinator, the local agent): running tasks are handed back."""
    KEEP_RUNNING = "keep-running"
    """Leave the work running: the embedded coordinator's process runs on in the background; a background one stays."""


@dataclass
class ConsoleOptions:
    """Options of one console run (built by `console.factory.make_app`)."""

    where: str = ""
    """What the top bar says about the coordinator, e.g. `embedded · http://127.0.0.1:8333 · state ~/...`."""
    read_only: bool = False
    """Hide every key that changes tasks or workers (cancel, retry, requeue, drain, remove, submit)."""
    demo: bool = False
    """Show the demo banner (the workers are simulated)."""
    now: Clock = utcnow
    """The clock ages are computed with; tests and screenshots pass a fixed one."""
    refresh_s: float = 1.0
    """Seconds between the end of one poll and the start of the next."""
    animation_level: AnimationLevel = "full"
    """Textual's animation level; `none` for tests and screenshots."""
    state_dir: Path | None = None
    """Where the chosen theme is remembered (`console.json`); None: not remembered."""
    theme: str | None = None
    """Theme to start with; default: the remembered one, else the dark theme."""
    notices: list[str] = field(default_factory=list)
    """Messages shown as toasts once the console is up (e.g. why no local agent was started)."""
    quit_mode: QuitMode = "attached"
    """What `q` asks (console/screens/quit.py): nothing on a console attached with `--attach`; on the embedded
    coordinator, whether running tasks go on in the background; on a background coordinator, whether it stays."""
    freeze_gc: bool = False
    """Once up, move the long-lived objects out of the garbage collector's way (`gc.freeze`): full collections
    then no longer rescan them every few refreshes (500 workers: p90 of a Workers refresh about halves).
    Off for tests, which build many apps in one process."""
    startup: EmbeddedStart | None = None
    """The embedded coordinator still coming up: the console draws at once, says how far the start got and
    connects to the coordinator once it answers (None: the client's coordinator is up already)."""
    export_dir: Path | None = None
    """Where `e` in the Batches pane writes a batch's results table; None: the current directory."""
