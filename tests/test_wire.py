"""One vocabulary: the packages import each other only one way, and the Lua scripts spell no Redis key."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from aiddwire import EndReason, FailureReason, GpuUsage, Heartbeat, Report
from coordinator import schemas
from coordinator.keys import lua_prelude

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"aiddwire", "coordinator", "nodeagent", "console", "themes", "toolkit", "tests", "bench", "scripts"}
ENTRY_POINT = Path("aiddclient/cli.py")
"""`aidd`, the whole product's command: it starts the console and the agent, so it alone may import them."""


def imported(package: str) -> dict[Path, set[str]]:
    """The first-party top-level packages each module of `package` imports (lazily or not)."""
    found: dict[Path, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[path.relative_to(ROOT)] = names & FIRST_PARTY - {package}
    return found


@pytest.mark.parametrize(("package", "allowed"), [
    ("aiddwire", set()),
    ("nodeagent", {"aiddwire"}),
    ("coordinator", {"aiddwire", "toolkit"}),  # toolkit.inputs: the task pack's result shape (`aidd results`)
])
def test_packages_import_one_way(package: str, allowed: set[str]) -> None:
    """The agent imports only the wire (it ships alone); the coordinator neither the console nor the agent (so they
    can become distributions of their own), except its command line, which starts both; the wire nothing."""
    wrong = {str(path): sorted(names - allowed) for path, names in imported(package).items()
             if names - allowed and path != ENTRY_POINT}
    assert not wrong


COORDINATOR_PROBE = """
import importlib, json, pkgutil, sys
import coordinator
for module in pkgutil.walk_packages(coordinator.__path__, "coordinator."):
    if module.name != "aiddclient.cli" and not module.name.startswith("coordinator.migrations"):
        importlib.import_module(module.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_coordinator_loads_neither_agent_nor_console() -> None:
    """Imported whole (its command line aside), the coordinator brings in no agent or console module, not even
    through the task pack it reads results with."""
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", COORDINATOR_PROBE], capture_output=True, text=True,
                                           cwd=ROOT, check=True, timeout=120).stdout))
    assert "coordinator" in loaded and not loaded & {"nodeagent", "console", "textual"}


def test_no_lua_script_spells_a_key() -> None:
    """Every key a script touches comes from the prelude written from `Keys`: no script reads the prefix or quotes
    a piece of a key itself."""
    for script in sorted((ROOT / "coordinator" / "lua").glob("*.lua")):
        code = re.sub(r"--.*", "", script.read_text())
        assert "ARGV[1]" not in code, f"{script.name} reads the prefix"
        literals = re.findall(r"'([^']*)'", code)
        assert not [text for text in literals if ":" in text or "aidd" in text], script.name
    assert lua_prelude().count("ARGV[1]") == 1


@pytest.mark.parametrize(("body", "model"), [(GpuUsage, schemas.GpuUsage), (Heartbeat, schemas.Heartbeat),
                                             (Report, schemas.TaskEvent)])
def test_the_api_validates_every_field_of_the_wire_bodies(body: type, model: type[schemas.BaseModel]) -> None:
    """The API's models take each field the wire types name (they add limits, and old agents' fields)."""
    assert set(body.__annotations__) <= set(model.model_fields)


def test_a_failed_report_gives_an_end_reason() -> None:
    """The reasons a `failed` report may give are end reasons (spelled out for the API's messages)."""
    assert {EndReason(reason) for reason in get_args(FailureReason)} == {EndReason.ERROR, EndReason.PERMANENT,
                                                                          EndReason.TIMEOUT}
