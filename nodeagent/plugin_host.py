"""The child process that runs plugin tasks: one task (`python -m nodeagent.plugin_host TASK_JSON`), or many in turn.

Running plugins out of the agent's process keeps the agent light (it never imports plugin modules)
and makes timeouts and cancels a plain process-group kill. One task: the outcome goes back through
files the runner names: the result as JSON in AIDD_RESULT_FILE, or {"error", "permanent"} in
AIDD_ERROR_FILE.

Warm (`--serve REQUEST_FD REPLY_FD SCRATCH_DIR`, see `nodeagent.warm`): the plugins are imported once
and tasks arrive one at a time as JSON lines on the request pipe; each runs in this process with its
own environment and working directory (the scratch dir, emptied after each task, unless the agent made
one for the attempt). Progress lines and the outcome go back on the reply pipe, the outcome only once
the task's output is flushed to stdout and stderr and whatever the task left running is killed (so the
agent has all of its output once the outcome is in). Killing the leftovers is needed anyway: this process
is a child subreaper, so orphans come back to it, and none may outlive its task. A task that leaves
threads behind, exits the interpreter, cannot load the plugins or asks for it (`TaskContext.retire_host`)
retires the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from nodeagent import fastjson
from nodeagent.plugins import PermanentError, TaskContext, TaskFunction, discover, modules_from

EXIT_ERROR = 1
EXIT_PERMANENT = 3
PR_SET_CHILD_SUBREAPER = 36


def _fail(message: str, permanent: bool) -> int:
    error_file = os.environ.get("AIDD_ERROR_FILE")
    if error_file:
        Path(error_file).write_text(json.dumps({"error": message, "permanent": permanent}))
    return EXIT_PERMANENT if permanent else EXIT_ERROR


def _load() -> dict[str, TaskFunction] | str:
    """The plugin registry, or why it could not be loaded."""
    try:
        return discover(modules_from([os.environ.get("AIDD_PLUGIN_MODULES", "")]))
    except Exception as exc:
        traceback.print_exc()
        return f"cannot load plugins: {type(exc).__name__}: {exc}"


def execute(task: dict[str, Any], registry: dict[str, TaskFunction] | str, control_fd: int | None,
            work_dir: Path) -> dict[str, Any]:
    """Run the task's plugin here (in `work_dir`, the current dir); returns {"code": 0, "result"} or {"code",
    "error", "permanent"}, with "retire": True when the plugin asked for its host to end (`TaskContext.retire_host`).

    Whether the result is JSON is found when it is written (once: results can be large).
    """
    if isinstance(registry, str):
        return {"code": EXIT_ERROR, "error": registry, "permanent": False}
    function = registry.get(task.get("task_type", ""))
    if function is None:
        known = ", ".join(sorted({"shell", *registry}))
        return {"code": EXIT_PERMANENT, "error": f"unknown task type {task.get('task_type')!r} (this agent runs: "
                                                 f"{known})", "permanent": True}
    context = TaskContext(task_id=task.get("task_id", ""), attempt_id=task.get("attempt_id", ""),
                          attempt=int(task.get("attempt") or 1), work_dir=work_dir, gpus=list(task.get("gpus") or []),
                          timeout_s=task.get("timeout_s"), task=task, control_fd=control_fd)
    outcome = _call(function, task, context)
    if context.retiring:
        outcome["retire"] = True
    return outcome


def _call(function: TaskFunction, task: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    try:
        result = function(dict(task.get("input_params") or {}), context)
    except PermanentError as exc:
        traceback.print_exc()
        return {"code": EXIT_PERMANENT, "error": str(exc) or "permanent error", "permanent": True}
    except Exception as exc:
        traceback.print_exc()
        return {"code": EXIT_ERROR, "error": f"{type(exc).__name__}: {exc}", "permanent": False}
    return {"code": 0, "result": result}


def _not_json(problem: Exception) -> str:
    """Why a plugin's result cannot be reported. Its callers dump with `allow_nan=False`: Python's json would write
    NaN and infinity, and the coordinator (and PostgreSQL's JSON) refuse them far from the plugin's name."""
    return f"the result is not JSON: {problem}"


def run(task: dict[str, Any]) -> int:
    """Run the task's plugin; returns the exit code (0 success, 1 error, 3 permanent error)."""
    fd = os.environ.get("AIDD_CONTROL_FD")
    outcome = execute(task, _load(), int(fd) if fd else None, Path.cwd())
    if outcome["code"] != 0:
        return _fail(outcome["error"], outcome["permanent"])
    try:
        result = json.dumps(outcome["result"], allow_nan=False)
    except (TypeError, ValueError) as exc:
        return _fail(_not_json(exc), True)
    Path(os.environ["AIDD_RESULT_FILE"]).write_text(result)
    return 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _become_subreaper() -> None:
    """Orphans of the tasks run here come back to this process (Linux), so none outlives its task."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


def end_leftovers() -> None:
    """Reap finished children; kill (and reap) every process a task left running."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        return  # no children at all: the usual case, one system call
    import psutil

    for _ in range(10):  # a dying parent hands its own children to us: go round until none are left
        children = psutil.Process().children(recursive=True)
        if not children:
            break
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=2)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


def _switch_env(base: dict[str, str], now: dict[str, str], wanted: dict[str, str]) -> None:
    """Take `os.environ` from `base` with `now` set on top to `base` with `wanted` set on top.

    Only the variables whose value differs are touched: setting one costs a few microseconds of Python, and
    consecutive tasks differ in two or three (their ids) of the half dozen each sets.
    """
    for name in now.keys() | wanted.keys():
        value = wanted[name] if name in wanted else base.get(name)
        if value != (now[name] if name in now else base.get(name)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reset_env(base: dict[str, str]) -> None:
    """Back to `base` after a plugin changed the environment itself (rare: decoding all of it is slow)."""
    now = dict(os.environ)
    for name in now.keys() - base.keys():
        del os.environ[name]
    for name, value in base.items():
        if now.get(name) != value:
            os.environ[name] = value


def _emptied(path: str) -> bool:
    """Empty the scratch dir (usually it is already: one system call); whether it is empty now."""
    with os.scandir(path) as found:
        entries = list(found)
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    if not entries:
        return True
    with os.scandir(path) as found:
        return next(found, None) is None


def serve(request_fd: int, reply_fd: int, scratch: str) -> int:
    """Run the tasks that arrive on `request_fd` one after another (see the module docstring)."""
    for fd in (request_fd, reply_fd):
        os.set_inheritable(fd, False)  # the tasks' own children get neither pipe
    _become_subreaper()
    os.makedirs(scratch, exist_ok=True)
    registry = _load()
    home, base_env = os.getcwd(), dict(os.environ)
    applied: dict[str, str] = {}
    """How the environment differs from `base_env` now: the last task's variables stay until the next one's replace
    them (what it changed itself is undone at its end)."""
    scratch_dir = Path(scratch)
    threads = threading.active_count()
    with os.fdopen(request_fd, "rb") as requests:
        for line in requests:
            request = fastjson.loads(line)
            cwd = request["cwd"]
            wanted: dict[str, str] = request["env"]
            _switch_env(base_env, applied, wanted)
            applied = wanted
            # `os.environ`'s own bytes mapping: comparing it after the task is done in C, where building
            # `dict(os.environ)` decodes every variable (about 0.15 ms a task)
            task_data = dict(os.environ._data)  # type: ignore[attr-defined]
            retire = isinstance(registry, str)
            try:
                os.chdir(cwd)
                work_dir = scratch_dir if cwd == scratch else Path(cwd)
                outcome = execute(request["task"], registry, reply_fd, work_dir)
            except OSError as exc:
                outcome = {"code": EXIT_ERROR, "error": f"cannot use the working dir: {exc}", "permanent": False}
            except BaseException as exc:  # SystemExit or KeyboardInterrupt from a plugin: this host is done
                code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else EXIT_ERROR
                outcome = ({"code": 0, "result": {"exit_code": 0}} if code == 0 else
                           {"code": code, "error": f"the plugin exited the interpreter ({type(exc).__name__})",
                            "permanent": False})
                retire = True
            os.chdir(home)
            if os.environ._data != task_data:  # type: ignore[attr-defined]  # the plugin changed it itself
                _reset_env(base_env)
                applied = {}
            end_leftovers()
            if cwd == scratch and not _emptied(scratch):
                retire = True  # something in it could not be removed: the next task must not see it
            retire = retire or bool(outcome.pop("retire", False)) or threading.active_count() > threads
            with contextlib.suppress(ValueError, OSError):  # before the outcome: see the module docstring
                sys.stdout.flush()
                sys.stderr.flush()
            try:
                reply = json.dumps({"done": outcome, "retire": retire}, allow_nan=False).encode() + b"\n"
            except (TypeError, ValueError) as exc:
                reply = json.dumps({"done": {"code": EXIT_PERMANENT, "error": _not_json(exc), "permanent": True},
                                    "retire": retire}).encode() + b"\n"
            _write(reply_fd, reply)
            if retire:
                break
    return 0


def main() -> int:
    """Read the task (the lease the agent received) and run it; or, with --serve, run tasks as they come."""
    if sys.argv[1:2] == ["--serve"]:
        return serve(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    task = json.loads(Path(sys.argv[1]).read_text())
    code = run(task)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
