"""Timestamps of the hops of submit -> start, for `bench.latency_trace` (on the path of the processes it starts).

With AIDD_TRACE_FILE set, wraps the functions in HOOKS of the coordinator (`aidd --serve`) or of the agent
(`nodeagent.cli`) so that each call appends `<role>: <name>> <epoch>` on entry and `... <` on return to that file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import time
from typing import Any

HOOKS = {
    "coordinator": [
        ("coordinator.tasks", "TaskService", "submit"),
        ("coordinator.tasks", "TaskService", "_check_room"),
        ("coordinator.queue", "QueueIndex", "room"),
        ("coordinator.queue", "QueueIndex", "put_pending"),
        ("coordinator.wakeup", "Waker", "wake_all"),
        ("coordinator.wakeup", "Waker", "fire"),
        ("coordinator.wakeup", "Waker", "wait"),
        ("coordinator.workers", "WorkerService", "lease"),
        ("coordinator.workers", "WorkerService", "_routing"),
        ("coordinator.queue", "QueueIndex", "claim"),
        ("coordinator.lifecycle", "Lifecycle", "start"),
        ("coordinator.workers", "WorkerService", "report"),
        # asyncpg's own methods return their coroutine from a plain function: only their `>` (the call) counts
        ("asyncpg.transaction", "Transaction", "start"),
        ("asyncpg.transaction", "Transaction", "commit"),
        ("asyncpg.transaction", "Transaction", "rollback"),
        ("asyncpg.connection", "Connection", "fetchrow"),
        ("asyncpg.prepared_stmt", "PreparedStatement", "fetch"),
    ],
    "agent": [
        ("nodeagent.api", "CoordinatorApi", "lease"),
        ("nodeagent.agent", "Agent", "_start"),
        ("nodeagent.warm", "PluginPool", "acquire"),
        ("nodeagent.warm", "PluginHost", "run"),
        ("nodeagent.api", "CoordinatorApi", "report"),
    ],
}


def _install(role: str, path: str) -> None:
    out = open(path, "a", buffering=1)

    def mark(name: str) -> None:
        out.write(f"{role}:{name} {time.time():.6f}\n")

    def timed(fn: Any, tag: str) -> Any:
        if inspect.iscoroutinefunction(fn):
            async def awaited(*args: Any, **kwargs: Any) -> Any:
                mark(tag + ">")
                try:
                    return await fn(*args, **kwargs)
                finally:
                    mark(tag + "<")
            return awaited

        def called(*args: Any, **kwargs: Any) -> Any:  # returns the coroutine it makes: only the call is marked
            mark(tag + ">")
            return fn(*args, **kwargs)
        return called

    for module, cls_name, attr in HOOKS[role]:
        cls = getattr(importlib.import_module(module), cls_name)
        fn = getattr(cls, attr)
        setattr(cls, attr, functools.wraps(fn)(timed(fn, f"{cls_name}.{attr}")))


def _role() -> str | None:
    argv = " ".join(sys.orig_argv)
    if "aiddclient.cli --serve" in argv:
        return "coordinator"
    if "nodeagent.cli" in argv:
        return "agent"
    return None


if os.environ.get("AIDD_TRACE_FILE") and (_ROLE := _role()):
    _install(_ROLE, os.environ["AIDD_TRACE_FILE"])
