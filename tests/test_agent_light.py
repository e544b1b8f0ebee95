"""The node agent ships alone: importing all of it pulls in none of the coordinator's or console's weight."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"redis", "sqlalchemy", "starlette", "textual", "coordinator", "console", "pynvml", "uvicorn", "pydantic",
         "asyncpg"}

PROBE = """
import json, sys
import nodeagent, nodeagent.cli, nodeagent.agent, nodeagent.runner, nodeagent.gpu, nodeagent.telemetry
import nodeagent.reporter, nodeagent.plugins, nodeagent.plugin_host, nodeagent.builtin, nodeagent.inventory
import nodeagent.logsetup
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_agent_imports_nothing_heavy() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True,
                            timeout=60)
    loaded = set(json.loads(result.stdout))
    assert {"httpx", "psutil", "orjson"} <= loaded  # orjson: a C module of its own, no dependencies (see fastjson)
    assert not loaded & HEAVY, f"the agent imports {sorted(loaded & HEAVY)}"


PLUGIN_PROBE = """
import json, sys
from nodeagent.plugins import discover
print(json.dumps({"types": sorted(discover()), "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""
CHEMISTRY = {"rdkit", "torch", "admet_ai", "vina", "meeko", "dockstring", "numpy", "pandas"}


def test_plugin_hosts_load_the_chem_pack_without_its_chemistry() -> None:
    """Every plugin host imports the pack's entry point (`toolkit.tasks`): it registers its task types and
    imports no chemistry until one of them runs, so hosts start as fast without the extra as with it."""
    result = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], capture_output=True, text=True, cwd=ROOT, check=True,
                            timeout=60)
    found = json.loads(result.stdout)
    assert {"rdkit-props", "admet-ai", "vina"} <= set(found["types"])
    assert not set(found["modules"]) & (HEAVY | CHEMISTRY)


def test_a_pack_task_on_a_host_without_the_extra_fails_permanently_saying_what_to_install() -> None:
    from nodeagent.plugins import PermanentError
    from toolkit.tasks import _load

    with pytest.raises(PermanentError, match=re.escape("lacks the chem task pack (toolkit.not_installed): "
                                                       "pip install torch==2.13.0 'aidd[chem]'")):
        _load("toolkit.not_installed")
