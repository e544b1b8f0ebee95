"""The node agent ships alone: importing all of it pulls in none of the coordinator's or console's weight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"redis", "sqlalchemy", "starlette", "textual", "coordinator", "console", "pynvml", "uvicorn", "pydantic",
         "asyncpg", "orjson"}

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
    assert "httpx" in loaded and "psutil" in loaded
    assert not loaded & HEAVY, f"the agent imports {sorted(loaded & HEAVY)}"
