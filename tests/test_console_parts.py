"""The console's parts on their own: text safety, formatting, keyed table diffs, themes, keys, launch pieces."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Static

from aiddclient import DEFAULT_URL
from aiddclient.client import CoordinatorClient
from aiddclient.submitfile import input_name
from console.app import AiddConsole
from console.background import Detached, recorded
from console.child import start_api
from console.demo.cluster import HOSTS, DemoCluster
from console.demo.workload import DEMO_PREFIX
from console.factory import make_app
from console.keys import help_rows
from console.localagent import LocalAgent, agent_available
from console.query import TaskQuery
from console.screens.live import LiveScreen
from console.startup import EmbeddedStart
from console.text import age, plain, sparkline
from console.widgets.banners import StartingBanner
from console.widgets.keyed_table import Column, KeyedTable, fit
from coordinator.config import Settings
from coordinator.server import BackgroundServer
from tests.consolekit import refreshed, until
from themes import SEMANTIC, THEMES

ROOT = Path(__file__).resolve().parent.parent


# -- text ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[31mred\x1b[0m", "red"),
    ("\x1b]0;evil title\x07name", "name"),
    ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("a\x1bPdcs\x1b\\b", "ab"),
    ("bell\x07 nul\x00 del\x7f c1\x9b", "bell nul del c1"),
    ("rtl\u202eoverride", "rtloverride"),
    ("two\nlines\r\nhere", "two lines here"),
    ("[bold]markup[/] stays", "[bold]markup[/] stays"),
    (None, ""),
])
def test_plain_strips_escapes_and_controls(raw: Any, shown: str) -> None:
    assert plain(raw) == shown


def test_plain_cuts_long_text() -> None:
    assert plain("x" * 50, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(("seconds", "shown"), [
    (None, "\u2013"), (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h00m"), (7230, "2h00m"),
    (90000, "1d01h"),
])
def test_age(seconds: float | None, shown: str) -> None:
    assert age(seconds) == shown


def test_sparkline_scales_to_the_top_and_keeps_the_last_values() -> None:
    assert sparkline([0, 50, 100], 3, top=100) == "▁▅█"
    assert sparkline(list(range(10)), 4) == sparkline([6, 7, 8, 9], 4, top=9)
    assert sparkline([0, 0], 5) == "▁▁"
    assert sparkline([], 5) == ""


def test_query_narrows_bulk_filters_to_the_statuses_an_action_can_change() -> None:
    query = TaskQuery(status=("failed", "running"), service=("docking",), text="egfr")
    assert query.action_filter(frozenset({"pending", "running"})) == {
        "status": ["running"], "service": ["docking"], "search": "egfr"}
    assert query.list_params() == {"status": ["failed", "running"], "service": ["docking"], "q": "egfr"}
    assert TaskQuery().describe() == "all tasks"
    assert TaskQuery(service=("admet",), text="CCO").describe() == 'service admet · "CCO"'


# -- keyed table -----------------------------------------------------------------------------------

class TableApp(App[None]):
    """Just a keyed table."""

    def compose(self) -> ComposeResult:
        yield KeyedTable([("name", "Name", 8), ("n", "N", 4)])


def rows(*pairs: tuple[str, int]) -> list[tuple[str, list[Text]]]:
    return [(key, [Text(key), Text(str(n))]) for key, n in pairs]


@pytest.mark.anyio
async def test_keyed_table_diffs_rows_and_keeps_the_cursor_on_its_key() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(KeyedTable)
        table.sync(rows(("a", 1), ("b", 2), ("c", 3)))
        await pilot.pause()
        table.move_cursor(row=1)
        first_b = table.get_cell("b", "name")
        table.sync(rows(("new", 0), ("a", 1), ("b", 5), ("d", 4)))
        await pilot.pause()
        assert [str(r.key.value) for r in table.ordered_rows] == ["new", "a", "b", "d"]
        assert table.get_cell("b", "n").plain == "5"
        assert table.get_cell("b", "name") is first_b  # unchanged cells are not touched
        assert table.cursor_key == "b"
        table.sync(rows(("d", 4), ("b", 5)))
        await pilot.pause()
        assert [str(r.key.value) for r in table.ordered_rows] == ["d", "b"]
        assert table.cursor_key == "b"


def test_columns_drop_in_their_order_and_the_growing_ones_share_the_rest() -> None:
    columns = [Column("id", "ID", 8), Column("name", "Name", 10, grow=1), Column("try", "Try", 3, drop=2),
               Column("age", "Age", 4, drop=1), Column("note", "Note", 10, grow=2)]
    assert fit(columns, 54) == [(0, 8), (1, 13), (2, 3), (3, 4), (4, 16)]  # 45 needed: 9 spare, 1/3 and 2/3
    assert fit(columns, 40) == [(0, 8), (1, 10), (3, 4), (4, 10)]  # Try goes first
    assert fit(columns, 20) == [(0, 8), (1, 10), (4, 10)]  # never the undroppable ones, even when too narrow


def test_batch_tasks_are_named_after_their_inputs() -> None:
    assert input_name({"smiles": "CCO"}) == "CCO"
    assert input_name({"smiles": "c1ccccc1", "compound": "benzene", "pose": 2}) == "benzene"
    assert input_name({"seed": 7, "samples": 512}) == "7"
    assert input_name({"smiles": "C" * 300}) == "C" * 199 + "…"


# -- themes and keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("theme", THEMES, ids=lambda t: t.name)
def test_every_theme_defines_the_semantic_colours(theme: Any) -> None:
    assert set(SEMANTIC) <= set(theme.variables)


def test_no_colour_is_written_outside_the_themes() -> None:
    hex_colour = re.compile(r"#[0-9a-fA-F]{3,8}\b")
    named = re.compile(r"\b(?:color|background|border)\s*:\s*(?:red|green|blue|yellow|white|black|magenta|cyan)\b")
    offenders = []
    for path in [*ROOT.glob("console/**/*.tcss"), *ROOT.glob("console/**/*.py")]:
        text = path.read_text()
        if hex_colour.search(re.sub(r"#\w+\s*\{|#[a-z][\w-]*", "", text)) or named.search(text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_readme_keyboard_table_matches_the_keys_module() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- console-keys:start -->")[1].split("<!-- console-keys:end -->")[0]
    documented = re.findall(r"^\| ([^|]+) \| `([^`]+)` \| (.+) \|$", table, flags=re.M)
    assert [(w, k, d.replace("\\|", "|")) for w, k, d in documented] == help_rows()


def test_readme_shows_every_screenshot_and_they_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("queues", "workers", "tasks", "batches", "task-detail", "confirm", "filter", "submit", "help"):
        assert f"screenshots/{name}.svg" in readme
        assert (ROOT / "screenshots" / f"{name}.svg").is_file()


# -- launch pieces ----------------------------------------------------------------------------------

def test_the_api_moves_to_a_free_port_when_its_port_is_taken(settings: Settings, clean_db: None,
                                                             redis: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server, notices = start_api(settings.model_copy(update={"port": port}))
        try:
            assert not server.url.endswith(f":{port}")
            assert httpx.get(server.url + "/api/v1/health").status_code == 200
            assert notices and f"Port {port} is taken" in notices[0]
        finally:
            server.stop()


def top_bar(app: AiddConsole) -> str:
    """The text the top bar shows on the right, as drawn."""
    capture = Console(width=200, record=True, file=io.StringIO())
    capture.print(app.screen.query_one("#where", Static).content)
    return capture.export_text().strip()


SLOW_CHILD = """
import pathlib, sys, time
print("stage starting PostgreSQL…", flush=True)
while not pathlib.Path(sys.argv[1]).exists():  # stores that take their time to start
    time.sleep(0.05)
print("ready", sys.argv[2], flush=True)
sys.stdout.close()
sys.stdin.read()  # until the console's end closes
"""
"""A coordinator's process that says it waits for PostgreSQL until a file appears, then that it answers at a URL."""


@pytest.mark.anyio
async def test_first_frame_comes_before_the_stores_are_up(settings: Settings, api_server: BackgroundServer,
                                                          tmp_path: Path) -> None:
    """With a coordinator's process whose stores take their time to start, the console draws at once: the top
    bar says what the start waits for, the panes say they fill in later, and nothing is polled; once the process
    says its API answers, the console connects to the API's real address and the panes fill in. Quitting ends the
    process (the end of its stdin)."""
    release = tmp_path / "release"
    startup = EmbeddedStart(settings.model_copy(update={"state_dir": tmp_path}), None, 10.0,
                            argv=[sys.executable, "-c", SLOW_CHILD, str(release), api_server.url]).start()
    placeholder = CoordinatorClient(DEFAULT_URL, timeout=10)
    app = make_app(placeholder, where="embedded · state ~/x", refresh_s=0.2, animation_level="none", startup=startup)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: "starting PostgreSQL…" in top_bar(app), what="the start in the top bar")
            assert top_bar(app) == "embedded · state ~/x · starting PostgreSQL…"
            assert app.screen.query_one(StartingBanner).display
            await pilot.pause(0.5)
            assert isinstance(app.screen, LiveScreen) and app.screen.refreshes == 0 and app.client is placeholder

            release.touch()
            await refreshed(pilot)
            assert startup.url == api_server.url
            assert app.client.url == startup.url and top_bar(app) == startup.url
            assert not app.screen.query_one(StartingBanner).display and not app.problem
    finally:
        release.touch()
        startup.stop()
    assert startup.error is None and startup.process is not None and startup.process.returncode == 0


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[str]:
    """A module `fakeagent` that prints its arguments and sleeps (stands in for nodeagent.cli)."""
    (tmp_path / "fakeagent.py").write_text("import sys, time\nprint('agent', sys.argv[1:], flush=True)\n"
                                           "time.sleep(600)\n")
    sys.path.insert(0, str(tmp_path))
    yield "fakeagent"
    sys.path.remove(str(tmp_path))


def test_local_agent_runs_in_its_own_session_records_itself_and_stops(tmp_path: Path, fake_agent: str) -> None:
    assert agent_available(fake_agent) and not agent_available("no_such_agent_module")
    agent = LocalAgent("http://127.0.0.1:1", tmp_path, token="t0k", module=fake_agent).start()
    assert agent.record is not None and agent.process is not None
    pid = agent.record.pid
    assert os.getsid(pid) == pid  # a session of its own: no terminal hang-up or console signal reaches it
    saved = json.loads((tmp_path / "agent.pid").read_text())
    assert (saved["pid"], saved["url"], saved["state_dir"]) == (pid, "http://127.0.0.1:1", str(tmp_path))
    deadline = time.monotonic() + 10
    while "agent" not in (tmp_path / "agent.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "'--url', 'http://127.0.0.1:1', '--grace', '5', '--token', 't0k'" in (tmp_path / "agent.log").read_text()
    assert agent.ended() is None
    agent.stop(grace_s=5)
    assert agent.ended() == "exit code -15"
    assert not (tmp_path / "agent.pid").exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_local_agent_outlives_a_killed_console_and_is_reused(tmp_path: Path, fake_agent: str) -> None:
    """A console killed outright (kill -9, or its terminal closed) leaves its local agent running; the next console
    on the state directory reuses it for the same URL, and replaces it for another one."""
    console = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from console.localagent import LocalAgent; "
        f"sys.path.insert(0, {str(tmp_path)!r}); "
        f"a = LocalAgent('http://127.0.0.1:1', Path({str(tmp_path)!r}), module='fakeagent').start(); "
        "print(a.record.pid, flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    agents: list[LocalAgent] = []
    try:
        assert console.stdout is not None
        agent_pid = int(console.stdout.readline())
        console.kill()
        console.wait(10)
        time.sleep(0.5)
        assert psutil.Process(agent_pid).status() != psutil.STATUS_ZOMBIE, "the local agent died with its console"
        again = LocalAgent("http://127.0.0.1:1", tmp_path, module=fake_agent).start()
        agents.append(again)
        assert again.record is not None and again.record.pid == agent_pid and again.process is None
        assert again.notice is None and again.ended() is None
        other = LocalAgent("http://127.0.0.1:2", tmp_path, module=fake_agent).start()
        agents.append(other)
        assert other.record is not None and other.record.pid != agent_pid
        assert other.notice is not None and f"(pid {agent_pid}) worked for http://127.0.0.1:1" in other.notice
        assert not psutil.pid_exists(agent_pid) or psutil.Process(agent_pid).status() == psutil.STATUS_ZOMBIE
        assert again.ended() == "it exited"
    finally:
        console.kill()
        for agent in agents:
            agent.stop(grace_s=5)


def test_stale_pid_files_are_removed(tmp_path: Path) -> None:
    """A pid file is believed only while its pid runs the recorded program, started at the recorded time."""
    pid_file = tmp_path / "agent.pid"
    me = psutil.Process()
    word = me.cmdline()[0]  # a word of this process's command line: it stands in for the program
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(json.dumps(asdict(Detached(me.pid, me.create_time(), word, "http://x", str(tmp_path)))))
    assert recorded(pid_file, word) == Detached(me.pid, me.create_time(), word, "http://x", str(tmp_path))
    records = {
        "unreadable": "{not json",
        "dead pid": json.dumps(asdict(Detached(dead.pid, 0.0, word, "http://x", "."))),
        "another program": json.dumps(asdict(Detached(me.pid, me.create_time(), "nodeagent.cli", "http://x", "."))),
        "pid reused": json.dumps(asdict(Detached(me.pid, me.create_time() - 60, word, "http://x", "."))),
    }
    for why, text in records.items():
        pid_file.write_text(text)
        assert recorded(pid_file, "nodeagent.cli" if why == "another program" else word) is None, why
        assert not pid_file.exists(), why
    assert recorded(pid_file, "nodeagent.cli") is None  # no file: nothing runs


# -- demo -------------------------------------------------------------------------------------------

def test_demo_seeds_through_the_api_and_its_workers_run_tasks(api_server: BackgroundServer, client: httpx.Client,
                                                             tmp_path: Path) -> None:
    demo = DemoCluster(api_server.url, state_dir=tmp_path).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = client.get("/api/v1/workers").json()["items"]
            stats = client.get("/api/v1/tasks/stats").json()["by_status"]
            gpus = [g for w in workers for g in w["metrics"].get("gpus", [])]
            if len(workers) == len(HOSTS) and stats.get("succeeded") and any(g["utilization"] > 50 for g in gpus):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the demo did not get going: {len(workers)} workers, {stats}")
        assert {w["hostname"] for w in workers} == {h.hostname for h in HOSTS}
        assert all(w["hostname"].startswith("demo-") for w in workers)
        batches = client.get("/api/v1/batches").json()["items"]
        assert len(batches) == 4 and all(b["name"].startswith(DEMO_PREFIX) for b in batches)
        services = {s["service"] for s in client.get("/api/v1/stats/queues").json()["items"]}
        assert services == {"admet", "docking", "inference"}
    finally:
        demo.stop()
    workers = client.get("/api/v1/workers").json()["items"]
    assert {w["status"] for w in workers} == {"offline"}  # they left when the demo stopped
    assert (tmp_path / "demo-workers.json").is_file()
