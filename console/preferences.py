"""What the console remembers between runs (the theme), in a small JSON file under the state directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "console.json"


def load_theme(state_dir: Path | None) -> str | None:
    """The remembered theme name, if any (a missing or broken file is not an error)."""
    if state_dir is None:
        return None
    try:
        data = json.loads((state_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    theme = data.get("theme") if isinstance(data, dict) else None
    return theme if isinstance(theme, str) else None


def save_theme(state_dir: Path | None, theme: str) -> None:
    """Remember `theme` for the next run (failures are logged, never shown as errors)."""
    if state_dir is None:
        return
    path = state_dir / FILE_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"theme": theme}) + "\n")
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot remember the theme in %s: %s", path, exc)
