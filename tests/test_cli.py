"""The `aidd` commands for scripts, against the real API over HTTP: submit, tasks, workers, cancel, show, logs,
wait; bad input and an unreachable coordinator are one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiddclient.cli import main as cli_main
from console.background import find_coordinator, stop_all
from console.localagent import LocalAgent
from console.startup import EmbeddedStart
from coordinator.config import load_settings
from coordinator.server import BackgroundServer
from tests.support.agent import HttpAgent
from tests.support.pids import processes_in
from tests.support.ports import free_port
from tests.support.tasks import task_body
from tests.support.waiting import wait_until

Captured = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parent.parent


def run(capsys: Captured, server: BackgroundServer, *argv: str) -> tuple[int, str, str]:
    """Run `aidd ARGV --url ...` in this process; its exit status, stdout and stderr."""
    code = cli_main([*argv, "--url", server.url])
    out, err = capsys.readouterr()
    return code, out, err


def submit(capsys: Captured, server: BackgroundServer, *argv: str) -> str:
    code, out, err = run(capsys, server, "submit", "admet", "qikprop", "--json", *argv)
    assert code == 0, err
    return str(json.loads(out)["id"])


def log_lines(agent: HttpAgent, leased: dict[str, Any], *lines: tuple[str, str]) -> None:
    reply = agent.report(leased, "log", lines=[{"stream": stream, "line": line} for stream, line in lines])
    assert reply.status_code == 200, reply.text


def test_submit_list_show_and_cancel(api_server: BackgroundServer, client: httpx.Client, capsys: Captured) -> None:
    task_id = submit(capsys, api_server, "--name", "aspirin", "--params", '{"smiles": ["CCO"]}', "--priority", "3",
                     "--cpu", "2", "--label", "a100")
    task = client.get(f"/api/v1/tasks/{task_id}").json()
    assert (task["name"], task["input_params"], task["priority"], task["resources"]["cpu"], task["labels"]) == (
        "aspirin", {"smiles": ["CCO"]}, 3, 2.0, ["a100"])

    code, out, _ = run(capsys, api_server, "tasks", "--status", "pending")
    assert code == 0 and task_id in out and "1 of 1 tasks" in out
    code, out, _ = run(capsys, api_server, "show", task_id)
    assert code == 0 and "aspirin" in out and '{"smiles": ["CCO"]}' in out and "pending" in out
    assert '"cpu": 2.0' in out

    code, _, err = run(capsys, api_server, "cancel")
    assert code == 2 and err.startswith("aidd: cancel: give task ids") and "Traceback" not in err
    code, out, _ = run(capsys, api_server, "cancel", task_id)
    assert code == 0 and out.strip() == "cancel: 1 changed, 0 skipped"
    assert client.get(f"/api/v1/tasks/{task_id}").json()["status"] == "cancelled"


def test_batch_file_and_workers(api_server: BackgroundServer, client: httpx.Client, capsys: Captured,
                                tmp_path: Path) -> None:
    smiles = tmp_path / "library.smi"
    smiles.write_text("CCO\nc1ccccc1\nCC(=O)O\n")
    code, out, err = run(capsys, api_server, "submit", "admet", "qikprop", "--file", str(smiles))
    assert code == 0 and out.startswith("submitted 3 tasks as batch ")
    assert err == ""  # the progress bar is for a terminal only, never a pipe or a log
    batch_id = out.split()[-1]
    params = sorted(t["input_params"]["smiles"] for t in client.get("/api/v1/tasks", params={"batch_id": batch_id})
                    .json()["items"])
    assert params == ["CC(=O)O", "CCO", "c1ccccc1"]
    HttpAgent.register(client, hostname="dock-01", cpu_cores=8)
    code, out, _ = run(capsys, api_server, "workers")
    assert code == 0 and "dock-01" in out and "online" in out


def test_logs_split_stdout_and_stderr_and_follow_to_the_end(api_server: BackgroundServer, client: httpx.Client,
                                                            capsys: Captured) -> None:
    task_id = submit(capsys, api_server)
    agent = HttpAgent.register(client)
    [leased] = agent.lease()
    log_lines(agent, leased, ("stdout", "pose 1"), ("stderr", "warning: slow"))
    code, out, err = run(capsys, api_server, "logs", task_id)
    assert (code, out, err) == (0, "pose 1\n", "warning: slow\n")

    followed: list[int] = []
    follower = threading.Thread(target=lambda: followed.append(cli_main(["logs", "-f", task_id, "--url",
                                                                         api_server.url])))
    follower.start()
    time.sleep(1.5)  # following: it has printed what is there and polls
    assert follower.is_alive()
    log_lines(agent, leased, ("stdout", "pose 2"))
    assert agent.report(leased, "succeeded", result={"score": -7.1}).status_code == 200
    follower.join(15)
    assert not follower.is_alive() and followed == [0]
    out, err = capsys.readouterr()
    assert out == "pose 1\npose 2\n" and err == "warning: slow\n"

    again = threading.Thread(target=lambda: followed.append(cli_main(["logs", "-f", task_id, "--url",
                                                                      api_server.url])))
    again.start()
    again.join(10)  # finished already: the whole log, then it returns without following
    assert not again.is_alive() and followed == [0, 0]
    assert capsys.readouterr().out == "pose 1\npose 2\n"


def test_wait_exits_by_outcome(api_server: BackgroundServer, client: httpx.Client, capsys: Captured) -> None:
    ok, bad = submit(capsys, api_server), submit(capsys, api_server, "--max-retries", "0")
    code, out, _ = run(capsys, api_server, "wait", ok, "--timeout", "0.5")
    assert code == 124 and out.strip() == "1 task: 1 pending (gave up after 0.5s)"

    agent = HttpAgent.register(client)
    leased = {t["task_id"]: t for t in agent.lease(max_tasks=2)}
    agent.report(leased[ok], "succeeded")
    code, out, _ = run(capsys, api_server, "wait", ok)
    assert code == 0 and out.strip() == "1 task: 1 succeeded (all succeeded)"

    waited: list[int] = []
    waiter = threading.Thread(target=lambda: waited.append(cli_main(["wait", ok, bad, "--url", api_server.url])))
    waiter.start()
    time.sleep(1.5)
    assert waiter.is_alive()  # `bad` still runs
    agent.report(leased[bad], "failed", error="no 3D structure")
    waiter.join(15)
    assert waited == [1]
    assert capsys.readouterr().out.strip() == "2 tasks: 1 failed, 1 succeeded (not all succeeded)"


def test_wait_for_a_batch(api_server: BackgroundServer, client: httpx.Client, capsys: Captured,
                          tmp_path: Path) -> None:
    (tmp_path / "two.smi").write_text("CCO\nCCN\n")
    code, out, _ = run(capsys, api_server, "submit", "admet", "qikprop", "--file", str(tmp_path / "two.smi"))
    batch_id = out.split()[-1]
    agent = HttpAgent.register(client)
    for leased in agent.lease(max_tasks=2):
        agent.report(leased, "succeeded")
    code, out, _ = run(capsys, api_server, "wait", "--batch", batch_id, "--json")
    assert code == 0 and json.loads(out) == {"exit": 0, "counts": {"succeeded": 2}}
    code, _, err = run(capsys, api_server, "wait", "--batch", "8d2a3c52-1b1e-4a83-9d52-4e1c1e7a1b2f")
    assert code == 1 and "no tasks" in err and "Traceback" not in err


def test_bad_input_and_an_absent_coordinator_are_one_line(api_server: BackgroundServer, capsys: Captured) -> None:
    code, _, err = run(capsys, api_server, "submit", "admet", "qikprop", "--params", "{not json")
    assert code == 2 and err.startswith("aidd: --params: not JSON") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, api_server, "show", "not-a-uuid")
    assert code == 1 and err.startswith("aidd: ") and len(err.strip().splitlines()) == 1
    code = cli_main(["tasks", "--url", "http://127.0.0.1:9"])  # nothing listens on the discard port
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("aidd: ") and len(err.strip().splitlines()) == 1


def test_stop_ends_the_background_coordinator_and_the_local_agent(capsys: Captured) -> None:
    """A real embedded coordinator's process left running ("keep running in the background": the console's end
    of its stdin closed after `keep`) with a real local agent: it still answers, a later `aidd` finds it; `aidd
    stop` stops both, one line each, and leaves nothing of the state directory running; a second `aidd stop`
    finds nothing (exit 1, one line)."""
    state = Path(tempfile.mkdtemp(prefix="aidd-stop-"))  # outside pytest's root: root's PostgreSQL runs as another user
    config = state / "empty.yml"
    config.write_text("{}\n")
    port = free_port()
    try:
        settings = load_settings(config, state_dir=state, host="127.0.0.1", port=port)
        startup = EmbeddedStart(settings, None, 10.0, config).start()
        wait_until(lambda: startup.client or startup.error, 120, "the embedded coordinator to answer")
        assert startup.error is None and startup.url == f"http://127.0.0.1:{port}"
        coordinator = startup.keep()
        assert coordinator is not None and coordinator.url == startup.url
        time.sleep(1.0)  # its stdin has ended: a coordinator not told to keep running would be stopping now
        assert find_coordinator(state) == coordinator
        agent = LocalAgent(coordinator.url, state).start()
        assert agent.record is not None
        deadline = time.monotonic() + 30
        while not httpx.get(f"{coordinator.url}/api/v1/workers").json()["items"]:
            assert time.monotonic() < deadline, (state / "agent.log").read_text()
            time.sleep(0.2)
        code = cli_main(["stop", "--state-dir", str(state)])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert out.splitlines() == [
            f"stopped the local agent (pid {agent.record.pid}); its running tasks were handed back",
            f"stopped the background coordinator (pid {coordinator.pid}) at {coordinator.url}"]
        assert not agent.record.alive() and not coordinator.alive()
        assert not (state / "agent.pid").exists() and not (state / "coordinator.pid").exists()
        assert not processes_in(state), "something of the state directory still runs"
        assert find_coordinator(state) is None

        code = cli_main(["--state-dir", str(state), "stop"])
        _, err = capsys.readouterr()
        assert code == 1 and err == f"aidd stop: nothing runs in the background for {state}\n"
    finally:
        stop_all(state)
        shutil.rmtree(state, ignore_errors=True)


# -- a terminal gets no escapes; pipes, Ctrl+C and bad URLs end quietly -------------------------------------------

HOSTILE = "name \x1b]0;pwned\x07\x1b]52;c;ZWNobyBoaQ==\x07\x1b[31mred\x1b[0m"
"""A window-title (OSC 0) and a clipboard write (OSC 52), then colour: a task may write anything."""


def test_task_text_reaches_the_terminal_without_escapes(api_server: BackgroundServer, client: httpx.Client,
                                                        capsys: Captured) -> None:
    """`aidd tasks`, `show` and `logs` print what tasks wrote with their escape sequences removed; `logs --raw`
    prints the bytes as written."""
    task_id = submit(capsys, api_server, "--name", HOSTILE)
    agent = HttpAgent.register(client)
    [leased] = agent.lease()
    log_lines(agent, leased, ("stdout", f"out {HOSTILE}"))
    assert agent.report(leased, "failed", error=f"boom {HOSTILE}").status_code == 200
    for argv in (("tasks",), ("show", task_id), ("logs", task_id)):
        code, out, err = run(capsys, api_server, *argv)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out, argv
        assert "red" in out, argv
    code, out, _ = run(capsys, api_server, "logs", task_id, "--raw")
    assert code == 0 and "\x1b]52;c;" in out


def test_a_reader_that_goes_away_ends_the_command_quietly(api_server: BackgroundServer, client: httpx.Client) -> None:
    """`aidd tasks | head -1`: the command stops when its reader has gone, with no traceback or error message."""
    reply = client.post("/api/v1/tasks", json={"tasks": [{"service": "admet", "task_type": "qikprop",
                                                           "name": "x" * 200} for _ in range(1000)]})
    assert reply.status_code == 201, reply.text
    proc = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "tasks", "--page-size", "1000", "--url",
                             api_server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"ID")
    proc.stdout.close()
    assert proc.wait(30) == 141  # 128 + SIGPIPE, as a tool killed by the broken pipe
    assert proc.stderr.read() == b""


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default disposition, as a command typed in a terminal has it: a suite started in the background by a
    script (`cmd &` without job control) runs with SIGINT ignored, which its children inherit, and a Python started
    so never sees Ctrl+C (this test then hung)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_without_a_traceback(api_server: BackgroundServer, client: httpx.Client) -> None:
    """Ctrl+C while `aidd logs -f` follows a running task: exit 130, nothing but a clean end."""
    task_id = client.post("/api/v1/tasks", json={"service": "admet", "task_type": "qikprop"}).json()["id"]
    agent = HttpAgent.register(client)
    [leased] = agent.lease()
    log_lines(agent, leased, ("stdout", "working"))
    proc = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "logs", "-f", task_id, "--url", api_server.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"}, preexec_fn=_ctrl_c_as_in_a_terminal)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"working\n"  # following by now
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # SIGABRT makes faulthandler show where it waits
        proc.send_signal(signal.SIGABRT)
        pytest.fail(f"still running 30 s after SIGINT; its stacks:\n{proc.communicate(timeout=10)[1].decode()}")
    assert proc.returncode == 130
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["tasks", "--url", "localhost:8333"], {}, "--url"),
    (["tasks"], {"AIDD_URL": "ftp://host"}, "AIDD_URL"),
    (["show", "x", "--url=127.0.0.1"], {}, "--url"),
    (["--attach", "coordinator.example"], {}, "--attach"),
    (["tasks", "--page", "many"], {}, "--page"),
])
def test_bad_arguments_are_one_line_naming_them(argv: list[str], env: dict[str, str], named: str) -> None:
    """A URL without an http(s) scheme (given as a flag or in AIDD_URL), or a bad flag value: exit 2 with one line
    on stderr that names the flag or variable, and no traceback."""
    environ = {**{k: v for k, v in os.environ.items() if not k.startswith("AIDD_")}, **env}
    done = subprocess.run([sys.executable, "-m", "aiddclient.cli", *argv], capture_output=True, text=True,
                          env=environ, cwd=ROOT, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and named in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_commands_take_unique_id_prefixes(api_server: BackgroundServer, client: httpx.Client,
                                          capsys: Captured) -> None:
    """`aidd show`, `logs` and `cancel` take the start of a task id, as git and docker do."""
    task_id = submit(capsys, api_server, "--name", "short")
    code, out, err = run(capsys, api_server, "show", task_id[:8])
    assert code == 0 and task_id in out, err
    code, _, err = run(capsys, api_server, "logs", task_id[:8])
    assert code == 0, err
    code, out, err = run(capsys, api_server, "cancel", task_id[:8])
    assert code == 0 and out.strip() == "cancel: 1 changed, 0 skipped", err
    code, _, err = run(capsys, api_server, "show", "0000000000")
    assert code == 1 and err.startswith("aidd: ") and err.count("\n") == 1


SERVER_LIBRARIES = frozenset({"pydantic", "yaml", "sqlalchemy", "asyncpg", "alembic", "starlette", "uvicorn",
                              "textual", "redis", "psycopg", "minio"})
"""What the coordinator and the console import, and the commands for scripts must not (they start in 0.1 s)."""
IMPORTS_PROBE = """
import json, sys
from aiddclient.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"exit": code, "loaded": loaded}), file=sys.stderr)
"""


def test_commands_for_scripts_import_none_of_the_servers_libraries(api_server: BackgroundServer,
                                                                     client: httpx.Client) -> None:
    """`aidd --help`, `tasks`, `show`, `logs`, `submit` and `wait`, run to their end against a real coordinator,
    load none of the server's libraries (the reason they start in a tenth of a second; bench/newcomer.py times it)."""
    task_id = client.post("/api/v1/tasks", json={"service": "admet", "task_type": "qikprop"}).json()["id"]
    url = ["--url", api_server.url]
    commands = ((["--help"], 0), (["tasks", "--help"], 0), (["tasks", *url], 0), (["show", task_id, *url], 0),
                (["logs", task_id, *url], 0), (["submit", "admet", "qikprop", *url], 0),
                (["wait", task_id, "--timeout", "0.1", *url], 124))
    for argv, exit_code in commands:
        done = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, *argv], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
        probe = json.loads(done.stderr.splitlines()[-1])
        assert probe["exit"] == exit_code, (argv, done.stderr)
        assert "httpx" in probe["loaded"] or "--help" in argv, argv  # the probe sees what the command imported
        assert not SERVER_LIBRARIES & set(probe["loaded"]), (argv, SERVER_LIBRARIES & set(probe["loaded"]))


def test_a_batch_keeps_its_name_and_its_tasks_are_named_after_their_inputs(
        api_server: BackgroundServer, client: httpx.Client, capsys: Captured, tmp_path: Path) -> None:
    """`--name` names the batch (not the file); each task is called after its compound, so a failed one is found
    by it; the batch id's start is enough for `aidd tasks --batch`, `wait --batch` and the bulk actions."""
    (tmp_path / "kinase.smi").write_text("CCO\nc1ccccc1\n")
    code, out, err = run(capsys, api_server, "submit", "admet", "qikprop", "--file", str(tmp_path / "kinase.smi"),
                         "--name", "EGFR screen")
    assert code == 0, err
    batch_id = out.split()[-1]
    [batch] = [b for b in client.get("/api/v1/batches").json()["items"] if b["id"] == batch_id]
    assert batch["name"] == "EGFR screen"
    code, out, err = run(capsys, api_server, "tasks", "--batch", batch_id[:6], "--json")
    assert code == 0, err
    assert sorted(t["name"] for t in json.loads(out)["items"]) == ["CCO", "c1ccccc1"]
    code, out, err = run(capsys, api_server, "cancel", "--batch", batch_id[:6])
    assert (code, out.strip()) == (0, "cancel: 2 changed, 0 skipped"), err
    code, out, err = run(capsys, api_server, "wait", "--batch", batch_id[:6], "--json")
    assert code == 1 and json.loads(out)["counts"] == {"cancelled": 2}, err


def test_an_ambiguous_batch_or_worker_prefix_lists_the_candidates(api_server: BackgroundServer,
                                                                  client: httpx.Client, capsys: Captured) -> None:
    """Seventeen batches: two of them start with the same hex digit, and that digit alone names neither."""
    by_digit: dict[str, list[str]] = {}
    for i in range(17):
        reply = client.post("/api/v1/tasks", json={"name": f"b{i}", "tasks": [task_body()]})
        reply.raise_for_status()
        batch_id = reply.json()["batch_id"]
        by_digit.setdefault(batch_id[0], []).append(batch_id)
    digit, shared = next((d, ids) for d, ids in by_digit.items() if len(ids) > 1)
    code, _, err = run(capsys, api_server, "tasks", "--batch", digit)
    assert code == 1 and err.count("\n") == 1 and "several ids" in err
    assert all(i in err for i in sorted(shared)[:5]), err
    code, _, err = run(capsys, api_server, "retry", "--batch", "zz")
    assert code == 2 and "not an id" in err and err.count("\n") == 1
    agent = HttpAgent.register(client, hostname="gpu-07")
    [leased] = agent.lease()
    code, out, err = run(capsys, api_server, "tasks", "--worker", agent.id[:8], "--json")
    assert code == 0 and [t["id"] for t in json.loads(out)["items"]] == [leased["task_id"]], err
    assert json.loads(out)["items"][0]["worker_hostname"] == "gpu-07"


def test_help_imports_neither_the_client_nor_asyncio() -> None:
    """`aidd --help` and the parser stay fast (issue 19: ≤ 0.3 s): the client, its typed views and asyncio are
    imported only when a command runs."""
    heavy = ("aiddclient.client", "aiddclient.views", "asyncio", "httpx")
    probe = ("import sys; from aiddclient.cli import build_parser; build_parser(); "
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[]"
