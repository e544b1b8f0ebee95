"""The embedded coordinator's own process (console/child.py) as the console starts it (console/startup.py):
real stores, real processes. Quitting stops it and keeps its data, a start that fails says why in one line,
and a console killed with -9 leaves nothing running (keep running: tests/test_cli.py's `aidd stop` test)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console.startup import EmbeddedStart
from coordinator.config import Settings, load_settings
from tests.support.pids import gone, processes_in
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
START_S = 120.0
"""A first start on a new state directory creates the database (`initdb`): slow on a loaded machine."""


@pytest.fixture
def state() -> Iterator[Path]:
    """A state directory outside pytest's root (root's PostgreSQL runs as another user that must reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="aidd-child-"))
    (folder / "empty.yml").write_text("{}\n")
    yield folder
    for line in processes_in(folder):
        subprocess.run(["kill", "-9", line.split()[0]], check=False)
    shutil.rmtree(folder, ignore_errors=True)


def settings_for(state: Path) -> Settings:
    return load_settings(state / "empty.yml", state_dir=state, host="127.0.0.1", port=0)


def started(state: Path) -> EmbeddedStart:
    """The embedded coordinator's process on `state`, once it answers (or has failed)."""
    startup = EmbeddedStart(settings_for(state), None, 10.0, state / "empty.yml").start()
    wait_until(lambda: startup.client or startup.error, START_S, "the embedded coordinator to answer or fail")
    return startup


def test_quit_stops_it_and_its_stores_and_keeps_their_data(state: Path) -> None:
    """It starts in a process of its own and answers; a second start on the same state directory fails with one
    line saying which process holds it; quitting (the end of its stdin) stops it and its stores, and a later
    start finds the task submitted before."""
    startup = started(state)
    try:
        assert startup.error is None and startup.url is not None and startup.process is not None
        submitted = httpx.post(f"{startup.url}/api/v1/tasks", json={"service": "admet", "task_type": "qikprop"})
        assert submitted.status_code == 201, submitted.text

        second = started(state)
        assert second.client is None and second.error is not None
        assert f"is in use by another aidd (pid {startup.process.pid})" in second.error
        assert "\n" not in second.error
        assert second.process is not None and second.process.wait(10) == 1
    finally:
        startup.stop()
    assert startup.process.returncode == 0
    wait_until(lambda: not processes_in(state), 20, "nothing of the state directory to run")

    again = started(state)
    try:
        assert again.error is None and again.url is not None
        tasks = httpx.get(f"{again.url}/api/v1/tasks").json()
        assert [t["id"] for t in tasks["items"]] == [submitted.json()["id"]]
    finally:
        again.stop()


CONSOLE = """
import sys, time
from pathlib import Path
from console.startup import EmbeddedStart
from coordinator.config import load_settings
state = Path(sys.argv[1])
settings = load_settings(state / "empty.yml", state_dir=state, host="127.0.0.1", port=0)
startup = EmbeddedStart(settings, None, 10.0, state / "empty.yml").start()
while startup.client is None and startup.error is None:
    time.sleep(0.05)
print(startup.process.pid, startup.url, startup.error, flush=True)
time.sleep(600)
"""
"""A console's start of its coordinator, without the console: prints the coordinator's pid and URL, then waits."""


def test_a_console_killed_takes_its_coordinator_down(state: Path) -> None:
    """kill -9 of the console: its coordinator's process sees its stdin end and stops, with its stores; nothing
    of the state directory runs on."""
    console = subprocess.Popen([sys.executable, "-c", CONSOLE, str(state)], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    try:
        assert console.stdout is not None
        pid, url, error = console.stdout.readline().split()
        assert error == "None", (state / "coordinator.log").read_text()
        assert httpx.get(f"{url}/api/v1/health").status_code == 200
        console.send_signal(signal.SIGKILL)
        console.wait(10)
        wait_until(lambda: gone(int(pid)), 30, "the coordinator's process to stop")
        wait_until(lambda: not processes_in(state), 20, "nothing of the state directory to run")
    finally:
        console.kill()
        console.wait(10)
