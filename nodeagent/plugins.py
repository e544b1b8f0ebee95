"""Python task types: a decorator registry, found in configured modules and the `aidd.task_types` entry points.

A plugin is a function `(input_params, context) -> JSON-able result`:

    from nodeagent.plugins import PermanentError, task_type

    @task_type("qikprop")
    def qikprop(params, context):
        if "smiles" not in params:
            raise PermanentError("input_params.smiles is required")
        context.progress(0.5, "half way")
        return {"mw": 46.07}

Plugins run in a child process (`nodeagent.plugin_host`), so a timeout or a cancel kills them cleanly
and a crashing plugin cannot take the agent down; the agent itself never imports plugin modules.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "aidd.task_types"
BUILTIN_MODULE = "nodeagent.builtin"
TaskFunction = Callable[[dict[str, Any], "TaskContext"], Any]
REGISTRY: dict[str, TaskFunction] = {}
InferenceFunction = Callable[[dict[str, Any], Any, dict[str, Any]], Any]
"""An AIFlow plugin: (model_spec, payload, inference_params) -> result."""


class PermanentError(Exception):
    """Raised by a plugin when retrying cannot help (bad input): the task fails without retries."""


def task_type(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register the decorated function as the runner of tasks with this `task_type`."""
    def register(function: TaskFunction) -> TaskFunction:
        REGISTRY[name] = function
        return function
    return register


def register_inference_function(name: str) -> Callable[[InferenceFunction], InferenceFunction]:
    """AIFlow's plugin decorator: `@register_inference_function("name") def f(model_spec, payload,
    inference_params)` runs the gateway's tasks of that `task_type` (their input_params hold the three parts);
    its return value is the task's result. Only the import line of such a plugin changes."""
    def register(function: InferenceFunction) -> InferenceFunction:
        def run(params: dict[str, Any], context: TaskContext) -> Any:
            return function(params.get("model_spec") or {}, params.get("payload"),
                            params.get("inference_params") or {})
        REGISTRY[name] = run
        return function
    return register


@dataclass
class TaskContext:
    """What a plugin knows about its attempt, and how it reports progress."""

    task_id: str = ""
    attempt_id: str = ""
    attempt: int = 1
    work_dir: Path = field(default_factory=Path.cwd)
    gpus: list[int] = field(default_factory=list)
    timeout_s: float | None = None
    task: dict[str, Any] = field(default_factory=dict)
    """The whole lease (name, service, resources, input_files, outputs, ...)."""
    control_fd: int | None = None
    retiring: bool = False
    """Set by `retire_host`: the warm plugin host stops after this task."""

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1) and an optional message; shown live in the console."""
        if self.control_fd is None:
            return
        line = json.dumps({"progress": max(0.0, min(1.0, float(fraction))), "message": message}) + "\n"
        try:
            os.write(self.control_fd, line.encode())
        except OSError:
            pass  # the agent went away; the task carries on

    def retire_host(self) -> None:
        """Ask for this process to end after the task (a plugin that holds state it cannot reset, e.g. CUDA
        initialised for other GPUs); the next task gets a fresh plugin host."""
        self.retiring = True

    def log(self, message: str) -> None:
        """A log line (plain `print` works too: stdout and stderr are streamed)."""
        print(message, flush=True)


def discover(modules: Sequence[str] = (), use_entry_points: bool = True) -> dict[str, TaskFunction]:
    """Import the built-in, configured and entry-point plugins; returns the registry.

    An entry point may name a module (its decorators register) or a function (registered under the
    entry point's name).
    """
    for module in [BUILTIN_MODULE, *modules]:
        importlib.import_module(module)
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            loaded = point.load()
            if callable(loaded) and point.name not in REGISTRY:
                REGISTRY[point.name] = loaded
    return REGISTRY


def modules_from(values: Iterable[str]) -> list[str]:
    """Module names from repeated flags and comma-separated lists (AIDD_PLUGIN_MODULES)."""
    return [m.strip() for value in values for m in value.split(",") if m.strip()]
