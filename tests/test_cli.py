"""The `aidd` commands for scripts, against the real API over HTTP: submit, tasks, workers, cancel, show, logs,
wait; bad input and an unreachable coordinator are one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from console.background import find_coordinator, start_coordinator, stop_all
from console.localagent import LocalAgent
from coordinator.cli import main as cli_main
from coordinator.server import BackgroundServer
from tests.helpers import HttpAgent

Captured = pytest.CaptureFixture[str]


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
    code, out, _ = run(capsys, api_server, "submit", "admet", "qikprop", "--file", str(smiles))
    assert code == 0 and out.startswith("submitted 3 tasks as batch ")
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
    """A real detached `aidd --serve` (as "keep running in the background" starts it) with a real local agent:
    a later `aidd` finds it; `aidd stop` stops both, one line each, and leaves nothing of the state directory
    running; a second `aidd stop` finds nothing (exit 1, one line)."""
    state = Path(tempfile.mkdtemp(prefix="aidd-stop-"))  # outside pytest's root: root's PostgreSQL runs as another user
    config = state / "empty.yml"
    config.write_text("{}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        coordinator = start_coordinator(state, "127.0.0.1", port, config)
        assert coordinator.url == f"http://127.0.0.1:{port}" and find_coordinator(state) == coordinator
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


def processes_in(state: Path) -> list[str]:
    """Live processes whose command line or working directory is in `state` (the embedded servers run there)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status", "name"]):
        with contextlib.suppress(psutil.Error):
            where = " ".join([*(proc.info["cmdline"] or []), proc.info["cwd"] or ""])
            if str(state) in where and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {proc.info['name']}")
    return found
