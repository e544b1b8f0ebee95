"""A task type for latency runs: `stamp` returns when its function started (load with --plugin-module bench.plugins)."""

from __future__ import annotations

import time
from typing import Any

from nodeagent.plugins import TaskContext, task_type


@task_type("stamp")
def stamp(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """No work; the result holds the epoch time the function was entered."""
    return {"started": time.time()}
