"""The child process that runs one plugin task: `python -m nodeagent.plugin_host TASK_JSON`.

Running plugins out of the agent's process keeps the agent light (it never imports plugin modules)
and makes timeouts and cancels a plain process-group kill. The outcome goes back through files the
runner names: the result as JSON in AIDD_RESULT_FILE, or {"error", "permanent"} in AIDD_ERROR_FILE.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from nodeagent.plugins import PermanentError, TaskContext, discover, modules_from

EXIT_ERROR = 1
EXIT_PERMANENT = 3


def _fail(message: str, permanent: bool) -> int:
    error_file = os.environ.get("AIDD_ERROR_FILE")
    if error_file:
        Path(error_file).write_text(json.dumps({"error": message, "permanent": permanent}))
    return EXIT_PERMANENT if permanent else EXIT_ERROR


def run(task: dict[str, Any]) -> int:
    """Run the task's plugin; returns the exit code (0 success, 1 error, 3 permanent error)."""
    try:
        registry = discover(modules_from([os.environ.get("AIDD_PLUGIN_MODULES", "")]))
    except Exception as exc:
        traceback.print_exc()
        return _fail(f"cannot load plugins: {type(exc).__name__}: {exc}", permanent=False)
    function = registry.get(task.get("task_type", ""))
    if function is None:
        known = ", ".join(sorted({"shell", *registry}))
        return _fail(f"unknown task type {task.get('task_type')!r} (this agent runs: {known})", permanent=True)
    fd = os.environ.get("AIDD_CONTROL_FD")
    context = TaskContext(task_id=task.get("task_id", ""), attempt_id=task.get("attempt_id", ""),
                          attempt=int(task.get("attempt") or 1), work_dir=Path.cwd(), gpus=list(task.get("gpus") or []),
                          timeout_s=task.get("timeout_s"), task=task, control_fd=int(fd) if fd else None)
    try:
        result = function(dict(task.get("input_params") or {}), context)
    except PermanentError as exc:
        traceback.print_exc()
        return _fail(str(exc) or "permanent error", permanent=True)
    except Exception as exc:
        traceback.print_exc()
        return _fail(f"{type(exc).__name__}: {exc}", permanent=False)
    try:
        encoded = json.dumps(result)
    except (TypeError, ValueError) as exc:
        return _fail(f"the result is not JSON: {exc}", permanent=True)
    Path(os.environ["AIDD_RESULT_FILE"]).write_text(encoded)
    return 0


def main() -> int:
    """Read the task (the lease the agent received) and run it."""
    task = json.loads(Path(sys.argv[1]).read_text())
    code = run(task)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
