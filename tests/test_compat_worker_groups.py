"""Coming from the worker-groups CLI (`cpds`): its commands as `aidd` commands against a real coordinator and
a real agent of group `linux`; shell commands with leading `VAR=value` words run as a shell would run them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from aiddclient.cli import main as aidd
from coordinator.server import BackgroundServer
from tests.agent_helpers import AgentProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def run(capsys: pytest.CaptureFixture[str], server: BackgroundServer, *argv: str) -> str:
    assert aidd([*argv, "--url", server.url]) == 0
    return capsys.readouterr().out


def test_cpds_add_list_and_workers(api_server: BackgroundServer, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    agent = AgentProcess(api_server.url, tmp_path, "builder-1", "--group", "linux")
    try:
        # cpds add build-app --desc "shell:GOOS=linux go build -o app ." --group linux
        command = 'GOOS=linux GOARCH=arm64 sh -c \'echo "$GOOS/$GOARCH" > built.txt; cat built.txt\''
        out = run(capsys, api_server, "submit", "build", "shell", "--name", "build-app", "--group", "linux",
                  "--params", json.dumps({"command": command}), "--json")
        task_id = json.loads(out)["id"]
        run(capsys, api_server, "wait", task_id, "--timeout", "60")
        assert "linux/arm64" in run(capsys, api_server, "logs", task_id)
        # cpds list --group linux ; cpds workers --group linux
        assert "build-app" in run(capsys, api_server, "tasks", "--group", "linux")
        assert run(capsys, api_server, "tasks", "--group", "docker").strip().endswith("0 of 0 tasks (page 1)")
        workers = wait_until(lambda: (out := run(capsys, api_server, "workers", "--group", "linux"))
                           and "builder-1" in out and out, 20, "the agent in the group's list")
        assert "online" in workers
    finally:
        agent.stop(signal.SIGTERM)
