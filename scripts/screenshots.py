"""Regenerate screenshots/*.svg: every main screen of the console, over the fixed demo picture.

Runs what the tests run: real (embedded) Redis and PostgreSQL in a temporary directory, the fixed demo
state written with fixed ids and times, the real API on a free port, and the console built by
`make_app` with its clock fixed at the state's anchor, so the pictures only change when the console does.

    .venv/bin/python scripts/screenshots.py [--out screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.pilot import Pilot  # noqa: E402

from aiddclient.client import CoordinatorClient  # noqa: E402
from console.app import AiddConsole  # noqa: E402
from console.factory import make_app  # noqa: E402
from console.screens.detail import TaskDetailScreen  # noqa: E402
from console.screens.live import LiveScreen  # noqa: E402
from coordinator.config import Settings  # noqa: E402
from coordinator.db import create_engine, migrate  # noqa: E402
from coordinator.runtime import stores  # noqa: E402
from coordinator.server import BackgroundServer  # noqa: E402
from tests.support.fixed import FixedState, write_fixed_state  # noqa: E402

SIZE = (120, 40)
WHERE = "embedded · 127.0.0.1:8333 · state ~/.local/share/aidd"


async def seed(database_url: str, anchor: datetime) -> FixedState:
    """Create the schema and write the fixed picture (before the API starts and indexes it)."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        return await write_fixed_state(engine, anchor)
    finally:
        await engine.dispose()


async def settle(pilot: Pilot[Any], at_least: int = 1) -> None:
    """Wait until the current screen has applied a poll."""
    deadline = time.monotonic() + 15
    while not (isinstance(pilot.app.screen, LiveScreen) and pilot.app.screen.refreshes >= at_least):
        if time.monotonic() > deadline:
            raise SystemExit(f"{type(pilot.app.screen).__name__} showed no data within 15 s")
        await pilot.pause(0.05)
    await pilot.pause()


async def shoot(url: str, state: FixedState, out: Path) -> list[Path]:
    """Visit every screen and save it as SVG."""
    app: AiddConsole = make_app(CoordinatorClient(url), where=WHERE, now=lambda: state.anchor, refresh_s=3600,
                                animation_level="none")
    saved: list[Path] = []

    def save(name: str) -> None:
        app.save_screenshot(f"{name}.svg", str(out))
        saved.append(out / f"{name}.svg")

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        save("queues")
        for key, name in (("2", "workers"), ("4", "batches"), ("3", "tasks")):
            await pilot.press(key)
            await settle(pilot)
            save(name)
        await pilot.press("slash", *"EGFR")
        await pilot.pause()
        save("filter")
        await pilot.press("escape", "space", "space", "c")
        await pilot.pause(0.3)
        save("confirm")
        await pilot.press("n", "escape")
        await pilot.pause()
        app.push_screen(TaskDetailScreen(str(state.running_task)))
        await settle(pilot)
        save("task-detail")
        await pilot.press("escape", "n")
        await pilot.pause()
        save("submit")
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        save("help")
    return saved


def main() -> int:
    """Start the stores and the API, seed, shoot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    anchor = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="aidd-shots-") as tmp:
        Path(tmp).chmod(0o755)
        with stores(Settings(state_dir=Path(tmp), port=0)) as ready:
            assert ready.database_url
            state = asyncio.run(seed(ready.database_url, anchor))
            server = BackgroundServer(ready, timers=False).start()
            try:
                saved = asyncio.run(shoot(server.url, state, args.out))
            finally:
                server.stop()
    for path in saved:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
