"""How one leased task becomes a command line: shell tasks as argv (a shell only when asked), plugins in a child.

Kept apart from the process handling in `runner` so the rules about what a task may ask for are in one
small place: `argv` runs as given, `command` is split like a shell would (`shlex`) but runs without
one unless `shell: true`, leading `NAME=value` words and `env` add string variables, `cwd` is relative to the
task's working dir.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET_ENV = ("AIDD_AGENT_TOKEN", "AIDD_API_KEY", "AIDD_TOKEN")
"""The agent's own credentials never reach a task."""
RESULT_FILE = "aidd-result.json"
ERROR_FILE = "aidd-error.json"
TASK_FILE = "aidd-task.json"


class BadTask(Exception):
    """The task's parameters cannot be run; retrying cannot help (reported as a permanent failure)."""


@dataclass(frozen=True)
class Command:
    """What to start for an attempt."""

    argv: list[str]
    own_env: dict[str, str]
    """The variables the attempt sets on top of the agent's environment (its ids and files, its GPUs, its own `env`, a
    plugin's import path): all that a warm plugin host, which has the agent's environment already, is sent."""
    base_env: Mapping[str, str]
    """The agent's environment, secrets included (see `env`)."""
    cwd: Path
    plugin: bool

    @property
    def env(self) -> dict[str, str]:
        """The whole environment of a process started for the attempt: the agent's without its secrets, then its own.

        Built only when a process is started: copying the whole environment costs more than the rest of a warm
        plugin task's command."""
        return {**agent_env(self.base_env), **self.own_env}


SHELL_WORDS = frozenset({"for", "while", "until", "if", "case", "cd", "export", "source", ".", "set", "alias",
                         "exec", "ulimit", "time"})
"""First words that only a shell understands: a command string starting with one needs `"shell": true`."""


def start_hint(program: str) -> str:
    """What to add to "cannot start X" when X is a shell word (with `"shell": true` it would be /bin/sh)."""
    return ' (a shell word: give the task "shell": true)' if program in SHELL_WORDS else ""


def shell_argv(params: Mapping[str, Any]) -> list[str]:
    """The argv of a shell task: `argv` (a list), or `command` (a string; via /bin/sh only with `shell: true`)."""
    argv, command = params.get("argv"), params.get("command")
    if argv is not None:
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str | int | float) for a in argv):
            raise BadTask("input_params.argv must be a non-empty list of strings")
        return [str(a) for a in argv]
    if isinstance(command, str) and command.strip():
        if params.get("shell") is True:
            return ["/bin/sh", "-c", command]
        try:
            return shlex.split(command)
        except ValueError as exc:
            raise BadTask(f"input_params.command: {exc}") from None
    raise BadTask("a shell task needs input_params.argv (a list) or input_params.command (a string)")


ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


def leading_assignments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`GOOS=linux go build` as a shell reads it: the leading NAME=value words set variables for the command
    (worker-group clients write commands so); a command of assignments only is refused."""
    env: dict[str, str] = {}
    for i, word in enumerate(argv):
        match = ASSIGNMENT.match(word)
        if match is None:
            return env, argv[i:]
        env[match.group(1)] = match.group(2)
    raise BadTask("the command sets variables but runs nothing")


def agent_env(base: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment without its secrets: what every task's environment starts from."""
    return {k: v for k, v in base.items() if k not in SECRET_ENV}


def task_vars(params: Mapping[str, Any]) -> dict[str, str]:
    """The task's own `env` (string, number or bool values), as strings."""
    extra = params.get("env") or {}
    if not isinstance(extra, dict):
        raise BadTask("input_params.env must be an object of NAME: value")
    env = {}
    for name, value in extra.items():
        if not isinstance(value, str | int | float | bool) or not name or "=" in name or "\0" in name:
            raise BadTask(f"input_params.env.{name}: must be a string, number or boolean")
        env[name] = str(value)
    return env


@functools.cache
def import_path() -> str:
    """PYTHONPATH for plugin children: the agent's own non-stdlib import path, so they find the same modules.

    Computed once (it resolves every entry of sys.path, which an agent does not change).
    """
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    entries = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if os.path.isdir(path) and not any(path.startswith(p + os.sep) or path == p for p in prefixes):
            entries.append(path)
    return os.pathsep.join(dict.fromkeys(entries))


def plugin_env(plugin_modules: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """`env` plus what a plugin process needs: the plugin modules, the agent's import path, unbuffered output."""
    return {**env, **plugin_vars(plugin_modules, env.get("PYTHONPATH", ""))}


def plugin_vars(plugin_modules: Sequence[str], python_path: str) -> Mapping[str, str]:
    """What a plugin process needs on top of an environment whose PYTHONPATH is `python_path` (see `plugin_env`)."""
    return _plugin_vars(tuple(plugin_modules), python_path)


@functools.lru_cache(maxsize=64)
def _plugin_vars(plugin_modules: tuple[str, ...], python_path: str) -> Mapping[str, str]:
    """Made once for each import path (every task of an agent asks for the same): read-only, as it is shared."""
    return types.MappingProxyType({"PYTHONUNBUFFERED": "1", "AIDD_PLUGIN_MODULES": ",".join(plugin_modules),
                                   "PYTHONPATH": os.pathsep.join(p for p in (import_path(), python_path) if p)})


def build_command(task: Mapping[str, Any], work_dir: Path, plugin_modules: Sequence[str], gpu_host: bool,
                  base_env: Mapping[str, str] | None = None) -> Command:
    """The command of one attempt, run in `work_dir` (which it may change with a relative or absolute `cwd`).

    Raises:
        BadTask: the parameters are malformed.
    """
    params = task.get("input_params") or {}
    if not isinstance(params, dict):
        raise BadTask("input_params must be an object")
    base = os.environ if base_env is None else base_env
    env = task_vars(params)
    where = str(work_dir)  # joined as plain strings: pathlib's or os.path's joins cost more than the rest of this
    env.update({"AIDD_TASK_ID": str(task["task_id"]), "AIDD_ATTEMPT_ID": str(task["attempt_id"]),
                "AIDD_ATTEMPT": str(task.get("attempt") or 1), "AIDD_WORK_DIR": where,
                "AIDD_RESULT_FILE": f"{where}/{RESULT_FILE}"})
    gpus = task.get("gpus") or []
    if gpus or gpu_host:  # a task without GPUs on a GPU host sees none, so it cannot take another task's
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    if task.get("task_type") != "shell":
        env["AIDD_ERROR_FILE"] = f"{where}/{ERROR_FILE}"
        env.update(plugin_vars(plugin_modules, env.get("PYTHONPATH", base.get("PYTHONPATH", ""))))
        return Command([sys.executable, "-m", "nodeagent.plugin_host", f"{where}/{TASK_FILE}"], env, base,
                       work_dir, plugin=True)
    cwd = params.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise BadTask("input_params.cwd must be a string")
    argv = shell_argv(params)
    if params.get("argv") is None:  # a command string reads as a shell would read it; an argv runs as given
        assignments, argv = leading_assignments(argv)
        env.update(assignments)
    return Command(argv, env, base, work_dir / cwd if cwd else work_dir, plugin=False)
