"""One attempt as a process: its own working dir and process group, output streamed line by line, killed whole.

Every attempt runs in a new session (so its process group is its own); a timeout, a cancel or a
stop sends SIGTERM to the whole group (and to any descendant that left it), then SIGKILL after a
grace. When the main process exits, whatever it left behind in its group is killed too, and so are the
processes it started in sessions of their own (see `strays`), so nothing outlives its task. On Linux the
direct child also dies with the agent (parent-death signal), and the agent's keeper process kills the
rest of the group (see `keeper`).

A failure of the agent's own (its work dir full or read-only, no plugin host can start) is not the task's:
the attempt is handed back without using a retry, and the agent stops leasing until it is healthy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import psutil

from aiddwire import HANDED_BACK, UNREPORTED, EndReason, EventKind, StopReason
from nodeagent.commands import ERROR_FILE, RESULT_FILE, TASK_FILE, BadTask, Command, build_command, start_hint
from nodeagent.files import AttemptFiles, AttemptGone, FileProblem
from nodeagent.keeper import Keeper
from nodeagent.lines import LineSplitter
from nodeagent.strays import kill_strays
from nodeagent.warm import HostGone, PluginHost, PluginPool

log = logging.getLogger(__name__)
TAIL_LINES = 20


class EventSink(Protocol):
    """Where a run sends its events and log lines (the reporter)."""

    def event(self, event: dict[str, Any]) -> None: ...

    def log(self, task_id: str, attempt_id: str, stream: str, line: str) -> None: ...


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGKILL the child when the agent dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: nothing is imported after fork
    return lambda: libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TaskRun:
    """One leased attempt: runs it, streams its output, enforces its timeout and reports how it ended."""

    def __init__(self, task: dict[str, Any], work_root: Path, sink: EventSink, plugin_modules: list[str],
                 gpu_host: bool = False, kill_grace: float = 5.0, max_line_bytes: int = 4000,
                 keep_work_dir: bool = False, files: AttemptFiles | None = None, keeper: Keeper | None = None,
                 plugins: PluginPool | None = None, environ: Mapping[str, str] | None = None,
                 health: Callable[[], str | None] | None = None, strays: bool = False) -> None:
        self.task, self.sink = task, sink
        self.task_id, self.attempt_id = str(task["task_id"]), str(task["attempt_id"])
        self.exclusive = bool(task.get("exclusive"))
        self.started_at = time.monotonic()
        self.gpus: list[int] = [int(g) for g in task.get("gpus") or []]
        self.resources: dict[str, float] = dict(task.get("resources") or {})
        self.timeout_s = float(task.get("timeout_s") or 0) or None
        self.work_root = work_root
        self.plugin_modules, self.gpu_host, self.kill_grace = plugin_modules, gpu_host, kill_grace
        self.max_line_bytes, self.keep_work_dir, self.files = max_line_bytes, keep_work_dir, files
        self.keeper, self.plugins = keeper, plugins
        self.environ = environ  # the agent's environment (a snapshot: os.environ is slow to copy per task)
        self.health = health
        """Says what is wrong with the agent itself now, if anything (then a failure is not the task's)."""
        self.strays = strays
        """Whether the agent adopts orphans (a subreaper), so a task's strays can be found among its children."""
        self.stop_reason: StopReason | None = None
        self.pid: int | None = None
        self._wakers: list[Callable[[], None]] = []
        """What a stop wakes: the wait of `_until`, while the attempt runs."""
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    @functools.cached_property
    def work_dir(self) -> Path:
        """The attempt's working dir: a dir of its own under the work root, unless `run` gives it a warm host's scratch
        dir (then this join, costly beside the rest of such a task's work in the agent, is never made)."""
        return self.work_root / f"{self.task_id}.{self.task.get('attempt') or 1}"

    def stop(self, reason: StopReason) -> None:
        """Kill the attempt; the reason decides what is reported (see `StopReason`)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        for wake in list(self._wakers):
            wake()

    async def _until(self, job: asyncio.Future[Any]) -> bool:
        """Wait for `job`, a stop or the timeout, whichever comes first; whether `job` is done.

        One future and callbacks, not `asyncio.wait` over a task that waits for an event: a no-op plugin
        task is a few hundred microseconds of the agent's CPU, and those tasks were a tenth of it.
        """
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake(*_: Any) -> None:
            if not woken.done():
                woken.set_result(None)

        job.add_done_callback(wake)
        self._wakers.append(wake)
        timer = asyncio.get_running_loop().call_later(self.timeout_s, wake) if self.timeout_s else None
        try:
            if self.stop_reason is None:
                await woken
        finally:
            job.remove_done_callback(wake)
            self._wakers.remove(wake)
            if timer is not None:
                timer.cancel()
        return job.done()

    def pids(self) -> list[int]:
        """The attempt's process tree now (to attribute GPU memory to it)."""
        if self.pid is None:
            return []
        try:
            leader = psutil.Process(self.pid)
            return [self.pid, *(p.pid for p in leader.children(recursive=True))]
        except psutil.Error:
            return []

    def _emit(self, event: EventKind, **fields: Any) -> None:
        self.sink.event({"task_id": self.task_id, "attempt_id": self.attempt_id, "event": event, **fields})

    async def run(self) -> None:
        """Start, stream, wait (up to the timeout or a stop), clean up, and report the outcome."""
        self._emit(EventKind.STARTED)
        host: PluginHost | None = None
        scratch = False
        try:
            if self.plugins is not None and self.task.get("task_type") != "shell":
                host = await self.plugins.acquire()  # first: the host's scratch dir may become the working dir
                # Without files to fetch or keep, a warm host's own dir (emptied after each task) saves making and
                # removing a directory per attempt, which costs more than the rest of a short task on many disks.
                scratch = self.files is None and not self.keep_work_dir
                if scratch:
                    self.work_dir = host.scratch
            try:
                command = build_command(self.task, self.work_dir, self.plugin_modules, self.gpu_host, self.environ)
            except BadTask as exc:
                self._emit(EventKind.FAILED, error=str(exc), reason=EndReason.PERMANENT)
                return
            if not scratch:
                self.work_dir.mkdir(parents=True, exist_ok=True)
            if self.files is not None:
                await self.files.fetch_inputs(self.work_dir)
            given, host = host, None
            await self._run(command, given)
        except FileProblem as exc:
            self._emit(EventKind.FAILED, error=str(exc),
                       reason=EndReason.PERMANENT if exc.permanent else EndReason.ERROR)
        except AttemptGone:
            log.warning("task %s: attempt %s is no longer current", self.task_id, self.attempt_id)
        finally:
            if host is not None and self.plugins is not None:
                self.plugins.release(host)  # taken, but the task never ran
            if not self.keep_work_dir and not scratch:
                try:
                    self.work_dir.rmdir()  # usually empty: no thread needed
                except OSError:
                    await asyncio.to_thread(shutil.rmtree, self.work_dir, True)

    async def _run(self, command: Command, host: PluginHost | None = None) -> None:
        if self.stop_reason is not None:  # stopped while its inputs were downloading
            if host is not None and self.plugins is not None:
                self.plugins.release(host)
            self._report(command, None, self.stop_reason)
            return
        if host is not None and self.plugins is not None:
            await self._run_warm(command, self.plugins, host)
            return
        if command.cwd.is_relative_to(self.work_dir):
            command.cwd.mkdir(parents=True, exist_ok=True)
        (self.work_dir / TASK_FILE).write_text(json.dumps(self.task))
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=command.cwd, env={**command.env, "AIDD_CONTROL_FD": str(write_fd)},
                start_new_session=True,
                pass_fds=(write_fd,), preexec_fn=parent_death_signal())
        except OSError as exc:
            os.close(read_fd)
            where = f" ({exc.filename})" if exc.filename and exc.filename != command.argv[0] else ""
            problem = f"{exc.strerror or exc}{where}{start_hint(command.argv[0])}"
            self._emit(EventKind.FAILED, error=f"cannot start {command.argv[0]!r}: {problem}",
                       reason=EndReason.ERROR)
            return
        finally:
            os.close(write_fd)
        self.pid = proc.pid
        if self.keeper is not None:
            self.keeper.hold(proc.pid, self.exclusive)  # should the agent die, the task's whole group dies too
        assert proc.stdout is not None and proc.stderr is not None
        readers = asyncio.gather(self._pump(proc.stdout, "stdout"), self._pump(proc.stderr, "stderr"),
                                 self._control(read_fd))
        exited = asyncio.ensure_future(proc.wait())
        try:
            killed = not await self._until(exited)
            if killed:
                self.stop(self.stop_reason or StopReason.TIMEOUT)
                await self._terminate(proc.pid, exited)
        except asyncio.CancelledError:  # the agent is going down hard: so does the task
            self._end_group(proc.pid)
            raise
        self._end_group(proc.pid)  # whatever the task left behind dies with it
        if self.strays:
            kill_strays(self.attempt_id)  # and what it left in sessions of its own (which may hold its pipes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(readers, timeout=2.0)
        reason = self.stop_reason if killed else None
        self._report(command, proc.returncode, reason, await self._store_outputs(reason))

    async def _run_warm(self, command: Command, plugins: PluginPool, host: PluginHost) -> None:
        """A plugin task in a warm host (see `warm`); stopping it kills the host, which the pool then replaces."""
        self.pid = host.pid
        if self.exclusive and self.keeper is not None:
            self.keeper.hold(host.pid, exclusive=True)  # fenced as this task is, while it runs
        job = host.run(self.task, command.own_env, command.cwd, self._line, self._progress)
        try:
            killed = not await self._until(job)
            if killed:
                self.stop(self.stop_reason or StopReason.TIMEOUT)
                plugins.discard(host)
                await self._terminate(host.pid, host.exited)
        except asyncio.CancelledError:  # the agent is going down hard: so does the task
            host.kill()
            plugins.discard(host)
            raise
        outcome: dict[str, Any] | None = None
        with contextlib.suppress(HostGone):  # killed, or the plugin took its process down
            outcome = await job
        await host.end(gone=outcome is None)
        if outcome is None and not killed:
            plugins.discard(host)
        if outcome is not None:
            if self.exclusive and self.keeper is not None:
                self.keeper.hold(host.pid)
            plugins.release(host)
        returncode = outcome["code"] if outcome is not None else await host.exited
        reason = self.stop_reason if killed else None
        self._report(command, returncode, reason, await self._store_outputs(reason), outcome)

    async def _store_outputs(self, reason: StopReason | None) -> FileProblem | None:
        """Upload the outputs, whatever the exit, before the final report (accepted only while it is current)."""
        if self.files is None or reason in UNREPORTED | HANDED_BACK:
            return None
        try:
            await self.files.store_outputs(self.work_dir, self.task.get("outputs") or [],
                                           [TASK_FILE, RESULT_FILE, ERROR_FILE])
        except FileProblem as exc:
            return exc
        return None

    async def _terminate(self, pid: int, exited: asyncio.Future[int]) -> None:
        """SIGTERM the group and its descendants; SIGKILL what is still there after the grace."""
        try:
            tree = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            tree = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._signal_group(pid, sig)
            for child in tree:
                with contextlib.suppress(psutil.Error):
                    child.send_signal(sig)
            if sig == signal.SIGTERM:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), timeout=self.kill_grace)
        await exited

    def _end_group(self, pgid: int) -> None:
        """Kill what is left of the task's process group; the keeper need not hold it any more."""
        self._signal_group(pgid, signal.SIGKILL)
        if self.keeper is not None:
            self.keeper.release(pgid)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        splitter = LineSplitter(self.max_line_bytes)
        while chunk := await stream.read(65536):
            for line in splitter.feed(chunk):
                self._line(name, line)
        for line in splitter.flush():
            self._line(name, line)

    def _line(self, stream: str, line: str) -> None:
        self._tail.append(line)
        self.sink.log(self.task_id, self.attempt_id, stream, line)

    async def _control(self, fd: int) -> None:
        """Progress lines a task writes to AIDD_CONTROL_FD: {"progress": 0..1, "message": "..."}."""
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
        try:
            while line := await reader.readline():
                with contextlib.suppress(ValueError):
                    self._progress(json.loads(line))
        except ValueError:  # a line over the reader's limit: stop listening, the task goes on
            pass
        finally:
            transport.close()

    def _progress(self, update: Any) -> None:
        """A progress line of the task: {"progress": 0..1, "message": "..."} (anything else is ignored)."""
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            message = update.get("message")
            self._emit(EventKind.PROGRESS, progress=max(0.0, min(1.0, float(update["progress"]))),
                       message=str(message)[:2000] if message is not None else None)

    def _report(self, command: Command, returncode: int | None, reason: StopReason | None,
                problem: FileProblem | None = None, outcome: dict[str, Any] | None = None) -> None:
        """The final event: by why it was killed, else by its exit code (a late stop after a normal exit is moot)."""
        if (reason is None and returncode == -signal.SIGKILL and self.keeper is not None
                and self.keeper.killed_since(self.started_at, self.exclusive)):
            log.error("task %s: killed by the agent's task keeper (this agent was frozen or cut off past its "
                      "deadline): handed back", self.task_id)
            reason = StopReason.FENCE  # not the task's doing
        if reason in UNREPORTED:
            return
        if reason in HANDED_BACK:
            self._emit(EventKind.HANDBACK, message=f"handed back ({reason})")
            return
        problem_now = self.health() if self.health is not None and returncode != 0 and reason is None else None
        if problem_now is not None:  # it may well have failed of the agent's own trouble (a full disk)
            self._emit(EventKind.HANDBACK, error=f"agent problem: {problem_now}")
            return
        tail = "\n".join(self._tail)
        if problem is not None:
            tail = f"{tail}\n[aidd-agent] outputs not stored: {problem}".lstrip("\n")
            if returncode == 0 and reason is None:
                self._emit(EventKind.FAILED, exit_code=0,
                           reason=EndReason.PERMANENT if problem.permanent else EndReason.ERROR,
                           error=f"outputs not stored: {problem}")
                return
        if reason == StopReason.TIMEOUT:
            self._emit(EventKind.FAILED, reason=EndReason.TIMEOUT, exit_code=returncode,
                       error=_with_tail(f"timed out after {self.timeout_s:g}s", tail))
        elif returncode == 0:
            self._emit(EventKind.SUCCEEDED, exit_code=0,
                       result=outcome["result"] if outcome is not None else self._result())
        elif outcome is not None or (command.plugin and (self.work_dir / ERROR_FILE).exists()):
            failure = outcome if outcome is not None else json.loads((self.work_dir / ERROR_FILE).read_text())
            self._emit(EventKind.FAILED, exit_code=returncode,
                       reason=EndReason.PERMANENT if failure.get("permanent") else EndReason.ERROR,
                       error=_with_tail(str(failure.get("error")), tail))
        else:
            code = returncode or 0
            what = f"killed by signal {_signal_name(-code)}" if code < 0 else f"exit code {returncode}"
            self._emit(EventKind.FAILED, exit_code=returncode, reason=EndReason.ERROR, error=_with_tail(what, tail))

    def _result(self) -> Any:
        """The JSON the task wrote to AIDD_RESULT_FILE, else {"exit_code": 0}."""
        path = self.work_dir / RESULT_FILE
        try:
            return json.loads(path.read_text(errors="replace"), parse_constant=_no_constant, parse_float=_finite)
        except FileNotFoundError:
            return {"exit_code": 0}
        except ValueError as exc:
            return {"exit_code": 0, "result_error": f"{RESULT_FILE} is not JSON: {exc}"}


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON (Python's json reads them; the coordinator would refuse the report)."""
    raise ValueError(f"{name} is not a JSON value (write null)")


def _finite(text: str) -> float:
    """A JSON number as a float, unless it overflows one (`1e400` reads as infinity: see `_no_constant`)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a number (write null)")
    return value


def _with_tail(error: str, tail: str) -> str:
    """The error, then the end of the output (the coordinator keeps 20 000 characters)."""
    return f"{error[:2000]}\n--- last output ---\n{tail[-17_000:]}" if tail else error[:20_000]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
