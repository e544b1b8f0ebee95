"""The embedded console quit or killed with tasks in flight: the real `aidd --local-agent` on a pseudo-terminal.

Quitting or killing the console is at most a coordinator outage, not a lost worker (SPEC, "Guarantees"). `q`
then "keep running" leaves the coordinator's own process running as the state directory's background
coordinator (no outage at all); `kill -9` of the console ends that process and the embedded stores (its stdin
ends), and the next `aidd --local-agent` brings them back on the same port. Either way the local agent, in a
session of its own, keeps running its tasks and delivers them: every task finishes on its first attempt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from console.background import AGENT_FILE, AGENT_MODULE, COORDINATOR_FILE, COORDINATOR_MODULE, Detached, recorded
from tests.faults.cluster import FAST, Stopwatch
from tests.faults.processes import ROOT, alive, clean_env
from tests.faults.truth import Figures, Ledger, measure, read_records, recorded_task, system_view, unfinished
from tests.support.api import Api
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
TASKS, SECONDS = 3, 8.0
"""Three recorded tasks of 8 s each: they outlast the outage."""
HOST = "console-agent"
ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_].*?\x1b\\"
                     rb"|\x1b[()][0-9A-Za-z]|\x1b[=>78NOMc]")
"""Terminal control sequences (cursor moves, colours, titles, modes), removed to read what the console wrote."""


class Terminal:
    """`aidd ARGS` on a pseudo-terminal of 120x40: keys are typed into it, what it writes is kept (and logged)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.log_path = log_path
        with log_path.open("ab") as log:
            log.write(f"--- aidd {' '.join(args)} at {time.time():.3f} ---\n".encode())
        self.proc = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, cwd=ROOT, start_new_session=True)
        os.close(slave)
        self.master = master
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Drain the terminal (a full one would block the console) until every writer has closed it."""
        with self.log_path.open("ab") as log:
            while True:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self._output += chunk
                log.write(chunk)
                log.flush()

    def text(self) -> str:
        """What the console wrote, without control sequences."""
        with self._lock:
            raw = bytes(self._output)
        return ESCAPES.sub(b"", raw).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the console has written `text` (fails early if it exited)."""
        def shown() -> bool:
            if text in self.text():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"aidd exited ({self.proc.returncode}) before showing {text!r}:\n"
                                     f"{self.text()[-2000:]}")
            return False
        wait_until(shown, timeout, f"the console to show {text!r}", 0.1)

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def exit_code(self, timeout: float = 60.0) -> int:
        """Wait for aidd to exit; its exit code."""
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.master)


class Console:
    """A state directory (outside pytest's temp root: root's PostgreSQL runs as another user that must reach it),
    a fixed port, and the `aidd` consoles and commands run on them."""

    def __init__(self, work: Path) -> None:
        self.work, self.state = work, Path(tempfile.mkdtemp(prefix="aidd-faults-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.records = work / "records"
        self.records.mkdir()
        config = work / "empty.yml"
        config.write_text("{}\n")
        self.env = clean_env({"AIDD_CONFIG": str(config), "AIDD_STATE_DIR": str(self.state),
                              "AIDD_PORT": str(self.port), "AIDD_SLOTS": str(TASKS), "AIDD_HOSTNAME": HOST,
                              "FAULT_HOST": HOST, "TERM": "xterm-256color", **FAST})
        self.terminals: list[Terminal] = []
        self.ledger = Ledger()
        self.api = Api.connect(self.url)
        self.t0 = time.monotonic()

    @property
    def conninfo(self) -> str:
        """The embedded PostgreSQL, at the port kept in the state directory."""
        port = (self.state / "postgres.port").read_text().strip()
        return f"host=127.0.0.1 port={port} user=postgres dbname=aidd connect_timeout=2"

    def console(self, *args: str) -> Terminal:
        """`aidd --local-agent ARGS` on a terminal of its own."""
        terminal = Terminal(["--local-agent", *args], self.env, self.work / "console.log")
        self.terminals.append(terminal)
        return terminal

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`aidd ARGS` run to its end."""
        return subprocess.run([sys.executable, "-m", "aiddclient.cli", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)

    def health(self) -> int | None:
        with contextlib.suppress(Exception):
            return int(self.api.http.get("/api/v1/health", timeout=1).status_code)
        return None

    def agent(self) -> Detached:
        """The local agent the state directory records (it must run)."""
        found = recorded(self.state / AGENT_FILE, AGENT_MODULE)
        assert found is not None, f"no local agent runs:\n{self.logs()}"
        return found

    def start_work(self) -> Terminal:
        """A console with its local agent, and the recorded tasks running on it."""
        terminal = self.console()
        wait_until(lambda: self.health() == 200, 90, "the embedded coordinator to answer")
        wait_until(lambda: (w := self.api.worker(HOST)) and w["status"] == "online", 30, "the local agent to register")
        self.ledger.submit(self.api, [recorded_task(self.records, SECONDS) for _ in range(TASKS)])
        wait_until(lambda: self.running_now() == TASKS, 30, f"{TASKS} tasks to run")
        terminal.wait_for("Queues")
        return terminal

    def running_now(self) -> int:
        """Attempts running now as their own records tell (started, not ended, seen within a second)."""
        now = time.time()
        return sum(1 for ex in read_records(self.records).values() if not ex.ended and now - ex.last < 1.0)

    def finish(self, scenario: str, outage_s: float, note: str) -> Figures:
        """Wait until PostgreSQL holds every task as finished; the figures, checked: each ran once, on attempt 1."""
        with contextlib.suppress(AssertionError):  # what has not finished by then counts as lost in the figures
            wait_until(lambda: not unfinished(self.conninfo, self.ledger.ids()), 60, "every task to finish", 0.5)
        figures = measure(scenario, self.conninfo, self.ledger, self.records, self.api.counters().get("refused", 0),
                          None, outage_s, time.monotonic() - self.t0, note=f"outage {outage_s:.2f} s; {note}")
        tasks, _ = system_view(self.conninfo, self.ledger.ids())
        assert sorted(t["attempts"] for t in tasks.values()) == [1] * TASKS, tasks
        assert figures.outcomes == {"succeeded": TASKS} and figures.duplicate_executions == 0, figures
        return figures

    def leftovers(self) -> list[str]:
        """Processes of this state directory or its tasks still running (by command line or working directory)."""
        marks = (str(self.state), str(self.records))
        found = []
        for proc in psutil.process_iter(["cmdline", "cwd", "status", "name"]):
            with contextlib.suppress(psutil.Error):
                where = " ".join([*(proc.info["cmdline"] or []), proc.info["cwd"] or ""])
                if any(mark in where for mark in marks) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(f"{proc.pid} {proc.info['name']}")
        return found

    def logs(self) -> str:
        parts = [(name, self.state / name) for name in ("agent.log", "coordinator.log", "console.log")]
        parts.append(("terminal", self.work / "console.log"))
        return "\n".join(f"--- {name} ---\n{path.read_text(errors='replace')[-3000:]}"
                         for name, path in parts if path.exists())

    def close(self) -> None:
        """Stop whatever still runs (`aidd stop`, then by pid), and remove the state directory."""
        for terminal in self.terminals:
            terminal.close()
        self.command("stop")
        for line in self.leftovers():
            with contextlib.suppress(psutil.Error):
                psutil.Process(int(line.split()[0])).kill()
        self.api.close()
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def aidd(tmp_path: Path) -> Iterator[Console]:
    system = Console(tmp_path)
    yield system
    print(system.logs())
    system.close()


def outage(health: Callable[[], int | None], timeout: float = 60.0) -> float:
    """Seconds the coordinator did not answer: from its first unanswered health check to its next answer."""
    clock = Stopwatch()
    down = clock.until(lambda: health() is None, timeout, "the coordinator to go away")
    return clock.until(lambda: health() == 200, timeout, "the coordinator to answer again") - down


def test_quit_keep_running_leaves_the_coordinator_running(aidd: Console, record: Callable[[Figures], None]) -> None:
    """`q` with three tasks running, then `k`: the console leaves its coordinator's process running in the
    background on the same port, answering throughout; the local agent goes on, the tasks finish on their first
    attempt; a later `aidd` attaches to the background coordinator (and leaves it running), and `aidd stop`
    leaves nothing running."""
    terminal = aidd.start_work()
    agent = aidd.agent()
    terminal.press("q")
    terminal.wait_for("Keep running (k)")
    assert f"{TASKS} tasks are running." in terminal.text()
    terminal.press("k")
    unanswered = 0
    while terminal.proc.poll() is None:
        unanswered += aidd.health() != 200
        time.sleep(0.05)
    assert terminal.exit_code() == 0, terminal.text()[-2000:]
    assert unanswered == 0 and aidd.health() == 200, "the coordinator stopped answering while the console quit"
    outage_s = 0.0
    background = recorded(aidd.state / COORDINATOR_FILE, COORDINATOR_MODULE)
    assert background is not None and background.url == aidd.url
    assert f"aidd runs on in the background, with the local agent (pid {agent.pid})" in terminal.text()
    assert aidd.agent() == agent  # untouched

    attached = aidd.console()
    attached.wait_for(f"background coordinator · pid {background.pid}")
    attached.press("q")
    attached.wait_for("Leave it running (k)")
    attached.press("k")
    assert attached.exit_code() == 0
    assert f"the background coordinator (pid {background.pid}) runs on at {aidd.url}" in attached.text()
    assert aidd.agent() == agent and background.alive()

    figures = aidd.finish("console q, keep running", outage_s, "left running in the background; attached again")
    record(figures)
    stopped = aidd.command("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines() == [
        f"stopped the local agent (pid {agent.pid}); its running tasks were handed back",
        f"stopped the background coordinator (pid {background.pid}) at {aidd.url}"]
    assert not agent.alive() and not background.alive() and aidd.leftovers() == []


def test_console_killed_the_next_one_reuses_the_local_agent(aidd: Console,
                                                            record: Callable[[Figures], None]) -> None:
    """kill -9 of the console with three tasks running: its coordinator and stores stop with it, the local agent
    lives on; the next `aidd --local-agent`, started at once, waits for them to stop, starts the coordinator on the
    same port, reuses the agent, and the tasks finish on their first attempt. `q` with nothing running then stops
    everything."""
    terminal = aidd.start_work()
    agent = aidd.agent()
    terminal.proc.send_signal(signal.SIGKILL)
    terminal.exit_code()
    again = aidd.console()
    outage_s = outage(aidd.health, 90)
    assert alive(agent.pid) and aidd.agent() == agent  # reused, not replaced
    figures = aidd.finish("console kill -9, restarted", outage_s, "the local agent rode through")
    record(figures)

    again.wait_for("Queues")
    again.press("q")  # nothing runs: it quits at once and stops everything
    assert again.exit_code() == 0
    assert "stopping the local agent" in again.text()
    wait_until(lambda: not aidd.leftovers(), 20, "nothing of the state directory to run")
    assert not agent.alive()
