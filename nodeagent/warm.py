"""Warm plugin hosts: plugin tasks run in long-lived child processes instead of a fresh interpreter each.

Starting Python and importing the plugins costs about 60 ms of CPU; a warm host pays it once. Each
host runs one task at a time (`nodeagent.plugin_host --serve`), in its own session, so stopping a task
(timeout, cancel, stale, hand-back) is the same process-group kill as before: the host goes with it and
a fresh one takes its place later. Hosts start on demand and are sized by the host's cores, not its slots:
beyond the first two, a new one only when every host has been busy with its task for `spawn_after` seconds,
and beyond one per core only when every host has been busy for `long_after` (so short tasks share a few
hosts, however many slots the agent has, while long tasks that reserve no CPU still get a host each, up to
one per slot); a host idle for `idle_s` stops. Each host has a
scratch dir: the working dir of tasks that need no dir of their own (no files, no --keep-work-dirs),
emptied after each task.

Per task the host receives {"task", "env" (the variables the task sets on top of the host's own), "cwd"} as one
JSON line on its request pipe and answers on its reply pipe with progress lines and one {"done": outcome, "retire":
bool}: two messages a task. Its stdout and stderr stay open across tasks with no marker in them: the host writes the
outcome only after all of the task's output is in its pipes, so the agent, once it has the outcome, reads
the pipes until they are empty and has exactly that task's output (`PluginHost._drain_output`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import select
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeagent import fastjson
from nodeagent.inventory import usable_cpus
from nodeagent.keeper import Keeper
from nodeagent.lines import LineSplitter

log = logging.getLogger(__name__)
LineSink = Callable[[str, str], None]
ProgressSink = Callable[[dict[str, Any]], None]
REPLY_LIMIT = 64 << 20
"""Largest reply line (a result) read from a host."""
MIN_HOSTS = 2
"""Hosts started without delay (and at most this many start at once)."""
PIPE_MAX = 1 << 20
"""The most a pipe holds (Linux's default ceiling for F_SETPIPE_SZ): what is left of a task's output at its end."""
OUTPUT_WAIT_S = 2.0
"""How long the output of a task may trail the death of its host (leftovers of it may hold its pipes)."""


class HostGone(Exception):
    """The host process ended before the task did (killed, crashed, or the plugin ended the interpreter)."""


class PluginHost:
    """One warm plugin process."""

    def __init__(self, proc: asyncio.subprocess.Process, requests: asyncio.StreamWriter, replies: int,
                 outputs: dict[str, int], base_env: dict[str, str], scratch: Path, max_line_bytes: int) -> None:
        self.proc, self.requests = proc, requests
        self.base_env, self.scratch = base_env, scratch
        self.pid = proc.pid
        self.exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        self.retiring = False
        self.idle_since = time.monotonic()
        self.busy_since = time.monotonic()
        """When the pool last handed it out."""
        self._on_line: LineSink | None = None
        self._on_progress: ProgressSink | None = None
        self._done: asyncio.Future[dict[str, Any]] | None = None
        self._loop = asyncio.get_running_loop()
        self._replies, self._reply_rest = replies, bytearray()
        self._outputs = outputs
        """The read ends of its stdout and stderr (non-blocking), by stream name, until their end."""
        self._splitters = {name: LineSplitter(max_line_bytes) for name in outputs}
        self._ended: dict[str, asyncio.Future[None]] = {name: self._loop.create_future() for name in outputs}
        for fd in (replies, *outputs.values()):
            os.set_blocking(fd, False)
        self._loop.add_reader(replies, self._read_replies)
        self._ready = select.poll()
        """The output pipes, to see which hold anything at a task's end."""
        for name, fd in outputs.items():
            self._loop.add_reader(fd, self._take, name)
            self._ready.register(fd, select.POLLIN)

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path, max_line_bytes: int,
                    preexec: Callable[[], Any] | None) -> PluginHost:
        """Start a host process (its own session; it dies with the agent where `preexec` says so)."""
        loop = asyncio.get_running_loop()
        (request_r, request_w), (reply_r, reply_w) = os.pipe(), os.pipe()
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        scratch = cwd / f"plugin-host-{secrets.token_hex(8)}"
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nodeagent.plugin_host", "--serve", str(request_r), str(reply_w), str(scratch),
                stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd, env=env,
                start_new_session=True, pass_fds=(request_r, reply_w), preexec_fn=preexec)
        except BaseException:
            for fd in (request_w, reply_r, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (request_r, reply_w, out_w, err_w):
                os.close(fd)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                            os.fdopen(request_w, "wb"))
        writer = asyncio.StreamWriter(transport, protocol, None, loop)  # type: ignore[arg-type]
        return cls(proc, writer, reply_r, {"stdout": out_r, "stderr": err_r}, env, scratch, max_line_bytes)

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def run(self, task: dict[str, Any], own_env: dict[str, str], cwd: Path, on_line: LineSink,
            on_progress: ProgressSink) -> asyncio.Future[dict[str, Any]]:
        """Send one task to run in `cwd` (the host empties it afterwards when it is its `scratch` dir), in the host's
        environment with `own_env` set on top (the task's variables: `Command.own_env`): a future of
        its outcome ({"code", "result"} or {"code", "error", "permanent"}) once its output is in, which raises
        HostGone when the process ends first (its exit status is in `exited`). `end` closes the run.

        A future, not a coroutine: a task of its own for it was a tenth of what a no-op task costs the agent.
        """
        self._on_line, self._on_progress = on_line, on_progress
        self._done = done = self._loop.create_future()
        request = {"task": task, "env": {k: v for k, v in own_env.items() if self.base_env.get(k) != v},
                   "cwd": str(cwd)}
        self.requests.write(fastjson.dumps(request) + b"\n")
        return done

    async def end(self, gone: bool) -> None:
        """The task's run is over; when the host is `gone`, first its output up to the end of its pipes (which the
        task's leftovers may hold open for a while)."""
        try:
            if gone:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*self._ended.values()), OUTPUT_WAIT_S)
        finally:
            self._on_line = self._on_progress = None
            self.idle_since = time.monotonic()

    def _take(self, name: str) -> int:
        """Read what the stream's pipe holds now (up to 64 KiB) and route its lines to the current task; how many
        bytes (0: nothing there now, or the stream ended)."""
        fd = self._outputs.get(name)
        if fd is None:
            return 0
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return 0
        except OSError:
            chunk = b""
        if not chunk:
            self._end_output(name)
            return 0
        for line in self._splitters[name].feed(chunk):
            self._line(name, line)
        return len(chunk)

    def _drain_output(self) -> None:
        """Route all the output written so far, and each stream's unfinished last line, to the current task.

        The host writes a task's outcome only after the task's output (flushed, its leftover processes killed),
        so when the outcome is in, all of that output is in the pipes already: reading them until they are empty
        takes exactly that task's output, with no end marker in the streams.
        """
        ready = {fd for fd, _ in self._ready.poll(0)}  # one system call for both: an empty pipe's read raises
        for name, fd in list(self._outputs.items()):
            taken = 0
            while fd in ready and (size := self._take(name)):
                taken += size
                if taken > PIPE_MAX:  # more than a pipe holds: something outside the task writes still
                    self.retiring = True
                    break
            for line in self._splitters[name].flush():
                self._line(name, line)

    def _end_output(self, name: str) -> None:
        """The stream ended (the host and whatever held its pipe are gone): its last line, and no more reuse."""
        fd = self._outputs.pop(name)
        self._loop.remove_reader(fd)
        self._ready.unregister(fd)
        os.close(fd)
        for line in self._splitters[name].flush():
            self._line(name, line)
        if not self._ended[name].done():
            self._ended[name].set_result(None)
        self.retiring = True

    def _line(self, stream: str, line: str) -> None:
        if self._on_line is not None:
            self._on_line(stream, line)

    def _read_replies(self) -> None:
        """Take the complete reply lines in the pipe now; its end, or a reply over REPLY_LIMIT, ends the host."""
        try:
            chunk = os.read(self._replies, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._end_replies()
            return
        self._reply_rest += chunk
        if b"\n" not in chunk:
            if len(self._reply_rest) > REPLY_LIMIT:
                log.warning("plugin host %s sent a reply over %d bytes; stopping it", self.pid, REPLY_LIMIT)
                self.kill()
                self._end_replies()
            return
        *lines, rest = self._reply_rest.split(b"\n")
        self._reply_rest = rest
        for line in lines:
            self._reply(line)

    def _reply(self, line: bytes | bytearray) -> None:
        try:
            message = fastjson.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if "done" in message:
            self.retiring = self.retiring or bool(message.get("retire"))
            if self._done is not None and not self._done.done():
                self._drain_output()
                self._done.set_result(dict(message["done"]))
        elif "progress" in message and self._on_progress is not None:
            self._on_progress(message)

    def _end_replies(self) -> None:
        if self._replies < 0:
            return
        self._loop.remove_reader(self._replies)
        os.close(self._replies)
        self._replies, self._reply_rest = -1, bytearray()
        self.retiring = True
        if self._done is not None and not self._done.done():
            self._done.set_exception(HostGone())

    def kill(self) -> None:
        """SIGKILL the host's whole process group."""
        self.retiring = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def close(self, timeout: float = 2.0) -> None:
        """Ask the host to exit (end of its request pipe); kill it if it does not; stop reading its pipes."""
        self.retiring = True
        self.requests.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        self.kill()
        await self.exited
        self._end_replies()
        for name in list(self._outputs):
            self._end_output(name)


class PluginPool:
    """Up to `size` warm hosts for one agent (its slots), more than `cores` only for long tasks."""

    def __init__(self, env: dict[str, str], cwd: Path, size: int, max_line_bytes: int = 4000,
                 preexec: Callable[[], Any] | None = None, keeper: Keeper | None = None,
                 spawn_after: float = 0.25, idle_s: float = 60.0, cores: float | None = None,
                 long_after: float = 2.0) -> None:
        self.env, self.cwd, self.size, self.max_line_bytes = env, cwd, max(1, size), max_line_bytes
        self.preexec, self.keeper, self.spawn_after, self.idle_s = preexec, keeper, spawn_after, idle_s
        self.cores = max(MIN_HOSTS, math.ceil(cores or len(usable_cpus())))
        """Hosts that start as soon as every host is busy for `spawn_after`: as many as the host has cores."""
        self.long_after = long_after
        """How long every host must have been busy before one beyond `cores` starts (its tasks are long ones)."""
        self.hosts: set[PluginHost] = set()
        self._idle: list[PluginHost] = []
        self._starting = 0
        self._waiters: deque[asyncio.Future[PluginHost | None]] = deque()
        self._recheck: asyncio.TimerHandle | None = None
        """Wakes the longest waiting task when a new host may be due (one timer for all of them, not one each)."""
        self._closing: set[asyncio.Task[None]] = set()

    async def acquire(self) -> PluginHost:
        """A free host: an idle one, the next one to finish its task (first come, first served), or a new one.

        Raises:
            OSError: a host could not be started.
        """
        loop = asyncio.get_running_loop()
        while True:
            while self._idle:
                host = self._idle.pop()
                if host.alive and not host.retiring:
                    host.busy_since = time.monotonic()
                    return host
                self._forget(host)
            wait = self._spawn_in()
            if wait == 0.0:
                return await self._spawn()
            waiter: asyncio.Future[PluginHost | None] = loop.create_future()
            self._waiters.append(waiter)
            if wait is not None:
                self._recheck_in(wait)
            try:
                given = await waiter
            except asyncio.CancelledError:
                handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed is not None:
                    self.release(handed)  # handed over just as the task was cancelled
                raise
            finally:
                if not waiter.done() or waiter.cancelled():  # one `_wake_one` handed something to left the queue
                    with contextlib.suppress(ValueError):  # (a miss costs the future's repr in the error)
                        self._waiters.remove(waiter)
            if given is not None:
                return given
            # else: time to look again (a host may be started now)

    def _recheck_in(self, wait: float) -> None:
        """Wake the longest waiting task in `wait` seconds (unless a wake-up comes sooner already)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + wait
        if self._recheck is not None:
            if self._recheck.when() <= due:
                return
            self._recheck.cancel()
        self._recheck = loop.call_at(due, self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._wake_one(None)

    def _spawn_in(self) -> float | None:
        """Seconds until a new host should start for a waiting task (0: now; None: not now, wait for a host).

        The first MIN_HOSTS start at once. Beyond them a host starts only when every host has been busy with
        its current task for `spawn_after` seconds: with short tasks a busy host is free again sooner than a
        new one could start (and starting one costs a core for ~0.1 s). Past one host per core, more hosts
        would only share the same cores, so the wait is `long_after`: a loaded machine, where short tasks take
        longer than `spawn_after`, does not start a host per slot; tasks that wait on something other than the
        CPU (and reserve none) still get one each in the end.
        """
        count = len(self.hosts) + self._starting
        if count >= self.size or self._starting >= MIN_HOSTS:
            return None
        if count < MIN_HOSTS:
            return 0.0
        now = time.monotonic()
        youngest = min((now - h.busy_since for h in self.hosts if h.busy_since >= h.idle_since), default=0.0)
        return max(0.0, (self.spawn_after if count < self.cores else self.long_after) - youngest)

    async def _spawn(self) -> PluginHost:
        self._starting += 1
        try:
            self.cwd.mkdir(parents=True, exist_ok=True)
            host = await PluginHost.start(self.env, self.cwd, self.max_line_bytes, self.preexec)
        finally:
            self._starting -= 1
            self._wake_one(None)
        self.hosts.add(host)
        log.info("plugin host %d started (%d of at most %d)", host.pid, len(self.hosts), self.size)
        if self.keeper is not None:
            self.keeper.hold(host.pid)  # should the agent die, the host's whole group dies too
        return host

    def _wake_one(self, host: PluginHost | None) -> bool:
        """Hand `host` to the longest waiting task (None: let it look again); False when none waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if host is not None:
                    host.busy_since = time.monotonic()
                waiter.set_result(host)
                return True
        return False

    def release(self, host: PluginHost) -> None:
        """A host whose task ended normally goes to the next waiting task or back to the free list."""
        if not host.alive or host.retiring:
            self.discard(host)
        elif not self._wake_one(host):
            self._idle.append(host)

    def discard(self, host: PluginHost) -> None:
        """Take a host out of the pool (it was or is being killed with its task)."""
        host.retiring = True
        self._forget(host)
        job = asyncio.ensure_future(self._reap(host))
        self._closing.add(job)
        job.add_done_callback(self._closing.discard)
        self._wake_one(None)  # room for a new host

    def _forget(self, host: PluginHost) -> None:
        self.hosts.discard(host)
        with contextlib.suppress(ValueError):
            self._idle.remove(host)

    async def _reap(self, host: PluginHost) -> None:
        await host.close()
        if self.keeper is not None:
            self.keeper.release(host.pid)
        await asyncio.to_thread(shutil.rmtree, host.scratch, True)

    def sweep(self) -> None:
        """Stop hosts idle for longer than `idle_s`."""
        now = time.monotonic()
        for host in [h for h in self._idle if now - h.idle_since > self.idle_s]:
            self.discard(host)

    async def close(self) -> None:
        """Stop every host."""
        if self._recheck is not None:
            self._recheck.cancel()
        hosts = list(self.hosts)
        self.hosts.clear()
        self._idle.clear()
        await asyncio.gather(*(h.close() for h in hosts), *self._closing, return_exceptions=True)
        for host in hosts:
            if self.keeper is not None:
                self.keeper.release(host.pid)
            shutil.rmtree(host.scratch, ignore_errors=True)
