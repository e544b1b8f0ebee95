"""What ./run.sh and ./test.sh install: checked on what scripts/venv.sh asks pip for (a real fresh install takes a
minute; bench/newcomer.py does one), and on pyproject.toml's dependencies."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_TOOLS = ("pytest", "pytest-textual-snapshot", "mypy", "ruff", "moto", "hypothesis", "schemathesis", "types-")
FAKE_PYTHON = """#!/bin/sh
# stands in for the venv's python: records what pip is asked to install
echo "$@" >> "$(dirname "$0")/../pip-calls"
"""


def name(requirement: str) -> str:
    """The distribution name of a requirement (`moto[server]>=5.0` -> `moto`)."""
    for end in "[<>=!~; ":
        requirement = requirement.split(end)[0]
    return requirement.lower()


def test_running_needs_none_of_the_test_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    running = {name(r) for r in project["dependencies"]}
    dev = {name(r) for r in project["optional-dependencies"]["dev"]}
    assert not {n for n in running if n.startswith(TEST_TOOLS)}
    assert {"pytest", "mypy", "ruff", "moto", "hypothesis", "schemathesis"} <= dev


def venv_script(root: Path, *extras: str) -> list[str]:
    """Run scripts/venv.sh (a copy, in `root`, over a fake venv); what it asked pip to install this time."""
    calls = root / ".venv" / "pip-calls"
    calls.unlink(missing_ok=True)
    subprocess.run(["bash", str(root / "scripts" / "venv.sh"), *extras], check=True, capture_output=True, timeout=60)
    return calls.read_text().splitlines() if calls.exists() else []


def test_run_installs_what_running_needs_and_test_adds_the_dev_extra(tmp_path: Path) -> None:
    """run.sh's venv.sh call installs aidd alone; test.sh's adds the dev extra to that venv (and only then); once
    installed, neither installs again; run.sh reuses the venv test.sh made."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "venv.sh", tmp_path / "scripts" / "venv.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    assert (ROOT / "run.sh").read_text().count('"$root/scripts/venv.sh"\n') == 1  # no extras
    assert '"$root/scripts/venv.sh" dev\n' in (ROOT / "test.sh").read_text()

    [call] = venv_script(tmp_path)
    assert call.split()[:3] == ["-m", "pip", "install"] and call.split()[-2:] == ["-e", str(tmp_path)]
    assert venv_script(tmp_path) == []
    [call] = venv_script(tmp_path, "dev")
    assert call.split()[-1] == f"{tmp_path}[dev]"
    assert venv_script(tmp_path, "dev") == venv_script(tmp_path) == []

    for stamp in (tmp_path / ".venv").glob(".installed*"):
        stamp.unlink()
    [call] = venv_script(tmp_path, "dev")  # test.sh first, on a fresh machine
    assert call.split()[-1] == f"{tmp_path}[dev]"
    assert venv_script(tmp_path) == []
