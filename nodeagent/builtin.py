"""Built-in demo task types (`noop`, `sleep`, `echo`, `fail`), for benchmarks, tests and the console demo."""

from __future__ import annotations

import time
from typing import Any

from nodeagent.plugins import PermanentError, TaskContext, task_type


@task_type("noop")
def noop(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Do nothing; the cheapest possible task (scheduler overhead benchmarks)."""
    return {"ok": True}


@task_type("sleep")
def sleep(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Sleep `seconds` (default 1) in `steps` (default 10), reporting progress; a stand-in for real work."""
    seconds = float(params.get("seconds", 1.0))
    steps = max(1, int(params.get("steps", 10)))
    for step in range(steps):
        time.sleep(seconds / steps)
        context.progress((step + 1) / steps, f"step {step + 1}/{steps}")
    return {"slept_s": seconds}


@task_type("echo")
def echo(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Print `lines` (a list) and return the input parameters as the result."""
    for line in params.get("lines", []):
        print(line, flush=True)
    return {"params": params, "gpus": context.gpus, "attempt": context.attempt}


@task_type("fail")
def fail(params: dict[str, Any], context: TaskContext) -> None:
    """Fail with `message`; permanently (no retries) when `permanent` is true."""
    message = str(params.get("message", "failed on purpose"))
    if params.get("permanent"):
        raise PermanentError(message)
    raise RuntimeError(message)
