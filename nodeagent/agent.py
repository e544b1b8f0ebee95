"""The agent's loop: register, heartbeat, lease while it has free slots, run tasks, report, stop gracefully.

One asyncio loop and three background jobs — heartbeats (telemetry out, commands and stale tasks in,
self-fencing), leases (a long-poll whenever a slot is free) and the reporter — plus one job per
running attempt. Nothing blocks for long, so an idle agent sleeps in two HTTP calls.

Running work outlives the coordinator: while no coordinator answers, tasks keep running (up to the
disconnect grace) and their results, logs and outputs wait to be delivered. Only exclusive tasks are
stopped early, once the agent has been cut off long enough that a coordinator still up would give
them to another host; the others are stopped by the coordinator when the agent is back, if it did.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiddwire import CommandKind, EndReason, EventKind, StopReason
from nodeagent.api import CoordinatorApi, Refused, Unreachable, WorkerUnknown
from nodeagent.commands import agent_env, plugin_env
from nodeagent.files import AttemptFiles
from nodeagent.gpu import GpuProbe
from nodeagent.identity import load_identity, save_identity
from nodeagent.inventory import Host, work_dir_problem
from nodeagent.keeper import Keeper
from nodeagent.reporter import Reporter
from nodeagent.runner import TaskRun, parent_death_signal
from nodeagent.strays import ZombieSweep, become_subreaper
from nodeagent.telemetry import Telemetry
from nodeagent.warm import PluginPool

log = logging.getLogger("aidd-agent")


class AgentError(Exception):
    """A problem waiting will not fix (the coordinator refuses this agent's token or registration)."""


@dataclass
class AgentConfig:
    """How the agent runs (from the command line and environment; see `cli`)."""

    urls: list[str]
    """The coordinators to talk to (several sharing their stores: the agent moves on when one stops answering)."""
    token: str | None = None
    work_dir: Path = Path("aidd-work")
    plugin_modules: list[str] = field(default_factory=list)
    heartbeat_interval: float | None = None
    """Overrides the interval the coordinator suggests at registration."""
    grace: float = 20.0
    """Seconds running tasks get to finish on SIGTERM / shutdown before they are handed back."""
    kill_grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when a task is killed."""
    lease_wait: float = 30.0
    keep_work_dirs: bool = False
    fresh_plugin_process: bool = False
    """Run every plugin task in a new interpreter instead of a warm plugin host (see `warm`)."""
    disconnect_grace: float = 900.0
    """Seconds running tasks go on while no coordinator answers; then they are stopped (and handed back once a
    coordinator answers). Exclusive tasks stop sooner, before the coordinator's heartbeat timeout."""
    adopt_orphans: bool = False
    """Become a child subreaper (Linux) so processes a task starts in sessions of their own are found and killed
    with it (the `aidd-agent` command does; an agent embedded in another program leaves its process alone)."""


class Agent:
    """One node agent for one coordinator (or several that share their stores)."""

    def __init__(self, config: AgentConfig, host: Host, probe: GpuProbe) -> None:
        self.config, self.host, self.probe = config, host, probe
        self.api = CoordinatorApi(config.urls, config.token)
        self.telemetry = Telemetry(probe, host)
        self.reporter = Reporter(self.api.report, self._refused, self.reregister)
        self.keeper = Keeper()
        self.environ = dict(os.environ)
        self.plugins = None if config.fresh_plugin_process else PluginPool(
            plugin_env(config.plugin_modules, agent_env(self.environ)), config.work_dir, host.slots,
            preexec=parent_death_signal(), keeper=self.keeper, cores=host.cpu_cores)
        self.runs: dict[str, TaskRun] = {}
        self.interval = config.heartbeat_interval or 10.0
        self.timeout = 30.0
        self.draining = False
        self.coordinator_status = "online"
        self.problem: str | None = None
        """What is wrong with this host for running tasks (its work dir full or read-only); no leases meanwhile."""
        self.fenced = False
        self._given_up = False
        self._kills: dict[str, int] = {}
        """Attempt -> id of the cancel-task command to acknowledge once its process is gone."""
        self._acks: list[int] = []
        """Commands carried out whose acknowledgement has not reached the coordinator yet."""
        self._killed: deque[str] = deque(maxlen=1000)
        """Attempts cancelled before they reached this agent (a lease answer late or lost): never started."""
        self._zombies = ZombieSweep()
        self._outage = False
        self.last_heartbeat = time.monotonic()
        self.stopping = asyncio.Event()
        self._hard_stop = False
        self.exit_code = 0
        self._changed = asyncio.Event()
        self._answered = asyncio.Event()
        """Set when a heartbeat gets through after an outage (a lease waiting out its backoff asks again)."""
        self._ended = 0
        """Attempts ended so far (a lease answered early after some ended is not a reason to back off)."""
        self._register_lock = asyncio.Lock()
        self._beat_lock = asyncio.Lock()
        """Held while a heartbeat is on the wire and its answer applied: the shutdown stops the beats between two,
        so none reaches the coordinator after the worker deregistered (it would bring the worker back online)."""
        self._jobs: set[asyncio.Task[Any]] = set()

    # -- life cycle -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM / SIGINT / a shutdown command; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread (an agent embedded in another program): it calls request_stop itself
        self.keeper.start()
        if self.config.adopt_orphans and not become_subreaper():
            log.warning("cannot adopt orphaned processes here: helpers a task starts in a session of its own may "
                        "outlive it")
        try:
            if not await self.register(first=True):
                return 0
            background = [asyncio.create_task(_forever(job)) for job in (self._heartbeats, self.reporter.run,
                                                                         self._leases)]
            await self.stopping.wait()
            await self._shutdown(background)
            return self.exit_code
        finally:
            if self.plugins is not None:
                await self.plugins.close()
            await self.api.close()
            self.keeper.close()

    def request_stop(self, why: str = "stop") -> None:
        """Stop leasing and shut down gracefully; a second request skips the grace period."""
        if self.stopping.is_set():
            self._hard_stop = True
            log.warning("%s again: handing back running tasks now", why)
        else:
            log.info("%s: stopping (running tasks get %.0fs to finish)", why, self.config.grace)
        self.stopping.set()
        self._changed.set()

    async def register(self, first: bool = False) -> bool:
        """Register, retrying with backoff while the coordinator is unreachable; False if told to stop meanwhile.

        Raises:
            AgentError: the coordinator refuses the registration (bad token, invalid inventory).
        """
        delay = 1.0
        while True:
            sent_at = time.monotonic()
            try:
                answer = await self.api.register({**self.host.registration(), **self._identity()})
            except Unreachable as exc:
                log.warning("cannot reach the coordinator at %s (%s); retrying in %.0fs", self.api.url, exc, delay)
            except Refused as exc:
                hint = " (check --token / AIDD_AGENT_TOKEN)" if exc.status in (401, 403) else ""
                raise AgentError(f"the coordinator refused to register this host: {exc}{hint}") from None
            else:
                self.interval = self.config.heartbeat_interval or float(answer.get("heartbeat_interval") or 10.0)
                self.timeout = float(answer.get("heartbeat_timeout") or 30.0)
                self._heard(sent_at)
                save_identity(self.config.work_dir, self.host.hostname, str(answer["id"]), str(answer["token"]))
                log.info("registered as worker %s at %s (groups %s, %d slots, %d GPUs)", self.api.worker_id,
                         self.api.url, ",".join(self.host.groups), self.host.slots, len(self.host.gpus))
                return True
            if not first:
                await asyncio.sleep(delay)
            elif await self._wait(self.stopping, delay):
                return False
            delay = min(delay * 2, 30.0)

    def _identity(self) -> dict[str, str]:
        """The identity to take back: the one this process had (registering again), else the one kept on disk."""
        if self.api.worker_id and self.api.worker_token:
            return {"worker_id": self.api.worker_id, "worker_token": self.api.worker_token}
        return load_identity(self.config.work_dir, self.host.hostname)

    async def reregister(self) -> None:
        """The coordinator forgot this worker: register again (once, however many jobs noticed).

        The attempts it ran belonged to the forgotten worker, so no report about them can be accepted any
        more: they are stopped first.
        """
        forgotten = self.api.worker_id
        async with self._register_lock:
            if self.api.worker_id == forgotten:
                log.warning("the coordinator no longer knows worker %s; stopping its %d task(s), registering again",
                            forgotten, len(self.runs))
                for run in list(self.runs.values()):
                    run.stop(StopReason.STALE)
                try:
                    await self.register()
                except AgentError as exc:
                    log.error("%s", exc)
                    self.exit_code = 1
                    self.request_stop("registration refused")

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        background[2].cancel()  # no more leases
        deadline = time.monotonic() + self.config.grace
        while self.runs and not self._hard_stop and time.monotonic() < deadline:
            self._changed.clear()
            await self._wait(self._changed, min(0.2, deadline - time.monotonic()))
        for run in list(self.runs.values()):
            run.stop(StopReason.HANDBACK)
        deadline = time.monotonic() + self.config.kill_grace + 5
        while self.runs and time.monotonic() < deadline:
            self._changed.clear()
            await self._wait(self._changed, 0.2)
        if not await self.reporter.flushed(timeout=10):
            log.warning("could not send %d reports before stopping", self.reporter.pending)
        async with self._beat_lock:
            background[0].cancel()  # between two heartbeats
        try:
            await self.api.deregister()
            log.info("deregistered worker %s", self.api.worker_id)
        except (Unreachable, WorkerUnknown, Refused) as exc:
            log.warning("could not deregister: %s", exc)
        for job in background:
            job.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> bool:
        """Wait for `event` up to `timeout`; whether it was set."""
        try:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        return True

    # -- heartbeats, commands, fencing --------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            self._check_health()
            async with self._beat_lock:
                await self._beat()
            if self.plugins is not None:
                self.plugins.sweep()
            if self.config.adopt_orphans:
                self._zombies.sweep()
            await asyncio.sleep(self._next_beat())

    async def _beat(self) -> None:
        """Send one heartbeat and carry out its answer; an unreachable coordinator fences what must not outlive it."""
        beat = self.telemetry.heartbeat(self.runs.values())
        beat["current_tasks"] = sorted({*beat["current_tasks"], *self.reporter.holding()})  # ended, unreported
        beat["problem"] = self.problem
        sent_at = time.monotonic()
        try:
            answer = await self.api.heartbeat(beat,
                                              timeout=max(1.0, min(self.interval, self._fence_after() / 2)))
        except Unreachable as exc:
            if not self._outage:
                log.warning("heartbeat failed: %s (retrying every %.1fs; running tasks go on for up to %.0fs)",
                            exc, self.interval, self.config.disconnect_grace)
            self._outage = True
            self._fence_if_silent()
        except WorkerUnknown:
            await self.reregister()
        except Refused as exc:
            log.error("heartbeat refused: %s", exc)
        else:
            if self._outage:
                log.info("the coordinator at %s answers again after %.1fs", self.api.url,
                         time.monotonic() - self.last_heartbeat)
                self._answered.set()
            self._heard(sent_at)
            self.fenced = self._outage = self._given_up = False
            await self._apply(answer)

    def _heard(self, sent_at: float) -> None:
        """The coordinator answered a heartbeat (or the registration) sent at `sent_at`.

        The keeper gets until halfway between this agent's own fence and the coordinator's timeout (counted from
        when the heartbeat left) to hear again before it kills the exclusive tasks — past that, this agent is
        frozen or hung, and the coordinator is about to give them to another host — and until a little after the
        disconnect grace before it kills every task.
        """
        self.last_heartbeat = time.monotonic()
        fence_at = sent_at + self._fence_after() + (self.timeout - self._fence_after()) / 2
        give_up_at = sent_at + self.config.disconnect_grace + 2 * self.interval
        self.keeper.renew(fence_at - self.last_heartbeat, give_up_at - self.last_heartbeat)

    def _fence_after(self) -> float:
        """Silence after which the agent stops its exclusive tasks: safely before the coordinator requeues them."""
        return self.timeout - max(self.interval, self.timeout * 0.25)

    def _next_beat(self) -> float:
        if self.fenced or time.monotonic() - self.last_heartbeat < self.interval:
            return self.interval
        return max(0.1, min(self.interval, self.last_heartbeat + self._fence_after() - time.monotonic()))

    def _fence_if_silent(self) -> None:
        """No coordinator has answered for a while: stop the exclusive tasks before a coordinator still up would
        give them to another host; stop every task once the disconnect grace is over."""
        silent = time.monotonic() - self.last_heartbeat
        if silent >= self._fence_after() and not self.fenced:
            self.fenced = True
            exclusive = [run for run in self.runs.values() if run.exclusive]
            if exclusive:
                log.error("no coordinator answered for %.1fs: stopping %d exclusive task(s) before a coordinator "
                          "could give them to another host", silent, len(exclusive))
            log.warning("no coordinator answered for %.1fs: %d task(s) go on for up to %.0fs, their results kept "
                        "for when one answers", silent, len(self.runs) - len(exclusive), self.config.disconnect_grace)
            for run in exclusive:
                run.stop(StopReason.FENCE)
        if silent >= self.config.disconnect_grace and not self._given_up:
            self._given_up = True
            log.error("no coordinator answered for %.0fs (the disconnect grace): stopping %d task(s); they are "
                      "handed back once a coordinator answers", silent, len(self.runs))
            for run in list(self.runs.values()):
                run.stop(StopReason.FENCE)

    def _check_health(self) -> str | None:
        """Whether this host can run tasks now (its work dir writable, with room); logs when that changes."""
        problem = work_dir_problem(self.config.work_dir)
        if problem != self.problem:
            if problem is None:
                log.info("work dir usable again: taking tasks")
            else:
                log.error("%s: taking no tasks until this is fixed", problem)
        self.problem = problem
        return problem

    async def _apply(self, answer: dict[str, Any]) -> None:
        """Carry out the commands of a heartbeat answer (then acknowledge them) and kill stale tasks."""
        self.coordinator_status = str(answer.get("status") or "online")
        for command in answer.get("commands") or []:
            self._command(int(command["id"]), str(command.get("command")), command.get("args") or {})
        await self._send_acks()
        stale = set(answer.get("stale_tasks") or [])
        for run in list(self.runs.values()):
            if run.task_id in stale:
                log.warning("task %s is no longer this worker's: killing it", run.task_id)
                run.stop(StopReason.STALE)
        self._changed.set()

    def _command(self, command_id: int, name: str, args: dict[str, Any]) -> None:
        """Carry out one command; a cancel-task is acknowledged once its attempt's process is gone (the
        coordinator holds the task's next attempt back until then), the others at once."""
        log.info("command: %s %s", name, args or "")
        if name == CommandKind.DRAIN:
            self.draining = True
        elif name == CommandKind.RESUME:
            self.draining = False
        elif name == CommandKind.SHUTDOWN:
            self.request_stop("shutdown command")
        elif name == CommandKind.CANCEL_TASK:
            doomed = [run for run in self.runs.values() if run.task_id == args.get("task_id")
                      and args.get("attempt_id") in (None, run.attempt_id)]
            for run in doomed:
                run.stop(StopReason.CANCEL)
                self._kills[run.attempt_id] = command_id
            if doomed:
                return
            if args.get("attempt_id"):
                self._killed.append(str(args["attempt_id"]))
        else:
            log.warning("unknown command %r ignored", name)
        self._acks.append(command_id)

    async def _send_acks(self) -> None:
        """Acknowledge the commands carried out (kept for the next try when the coordinator does not answer)."""
        acks, self._acks = sorted(set(self._acks)), []
        if not acks:
            return
        try:
            await self.api.ack(acks)
        except (Unreachable, Refused, WorkerUnknown) as exc:
            log.warning("could not acknowledge commands %s: %s (trying again)", acks, exc)
            self._acks += acks

    def _refused(self, attempt_id: str) -> None:
        """A report was refused (409): that attempt is no longer current, so its process must go."""
        run = self.runs.get(attempt_id)
        if run is not None:
            log.warning("attempt %s of task %s is no longer current: killing it", attempt_id, run.task_id)
            run.stop(StopReason.STALE)

    # -- leasing and running ----------------------------------------------------------------------

    def _may_lease(self) -> bool:
        return (len(self.runs) < self.host.slots and not self.draining and not self.fenced and self.problem is None
                and self.coordinator_status == "online" and not self.stopping.is_set())

    async def _leases(self) -> None:
        delay = 1.0
        while True:
            self._changed.clear()
            if not self._may_lease():
                await self._wait(self._changed, self.interval)
                continue
            # The ask is what is free now; while tasks run that goes stale as they end, so poll shorter then.
            wait = self.config.lease_wait if not self.runs else min(self.config.lease_wait, self.interval)
            ask = {"max_tasks": self.host.slots - len(self.runs), "wait_s": wait,
                   **self.telemetry.free(self.runs.values())}
            asked_at, ended = time.monotonic(), self._ended
            try:
                tasks = await self.api.lease(ask)
                delay = 1.0
            except Unreachable as exc:
                log.warning("lease failed: %s; retrying in %.0fs", exc, delay)
                self._answered.clear()
                await self._wait(self._answered, delay)  # or as soon as a heartbeat gets through again
                delay = min(delay * 2, 30.0)
                continue
            except WorkerUnknown:
                await self.reregister()
                continue
            except Refused as exc:
                log.error("lease refused: %s", exc)
                await asyncio.sleep(self.interval)
                continue
            for task in tasks:
                self._start(task)
            if tasks:  # their runs hand them to plugin hosts first (two steps: the run's, then its host's job)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            if not tasks and time.monotonic() - asked_at < min(1.0, wait / 2) and self._ended == ended:
                # answered at once (e.g. draining): do not spin. An early answer because tasks of ours ended
                # meanwhile is the coordinator saying "ask again with what you have free now".
                await asyncio.sleep(min(self.interval, 5.0))

    def _start(self, task: dict[str, Any]) -> None:
        if str(task["attempt_id"]) in self._killed:
            log.warning("task %s: attempt %s was cancelled before it arrived; not started", task["task_id"],
                        task["attempt_id"])
            return
        files = (AttemptFiles(self.api, str(task["attempt_id"]), self.config.disconnect_grace)
                 if task.get("input_files") or task.get("outputs") else None)
        run = TaskRun(task, self.config.work_dir, self.reporter, self.config.plugin_modules,
                      gpu_host=bool(self.host.gpus), kill_grace=self.config.kill_grace,
                      keep_work_dir=self.config.keep_work_dirs, files=files, keeper=self.keeper,
                      plugins=self.plugins, environ=self.environ, health=self._check_health,
                      strays=self.config.adopt_orphans)
        if self.stopping.is_set():
            self.reporter.event({"task_id": run.task_id, "attempt_id": run.attempt_id, "event": EventKind.HANDBACK})
            return
        log.info("running task %s (%s/%s, attempt %s, gpus %s%s)", run.task_id, task.get("service"),
                 task.get("task_type"), task.get("attempt"), run.gpus or "-", ", exclusive" if run.exclusive else "")
        self.runs[run.attempt_id] = run
        job = asyncio.create_task(self._execute(run))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _execute(self, run: TaskRun) -> None:
        try:
            await run.run()
        except OSError as exc:  # the host's trouble, not the task's: hand it back, take no more until it clears
            log.error("task %s: agent problem: %s", run.task_id, exc)
            self.reporter.event({"task_id": run.task_id, "attempt_id": run.attempt_id, "event": EventKind.HANDBACK,
                                 "error": f"agent problem: {exc}"})
            self.problem = self._check_health() or f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug in the agent must not lose the attempt silently; it is failed (not handed
            log.exception("task %s: agent error", run.task_id)  # back), so one that hits every time ends
            self.reporter.event({"task_id": run.task_id, "attempt_id": run.attempt_id, "event": EventKind.FAILED,
                                 "reason": EndReason.ERROR, "error": f"agent error: {type(exc).__name__}: {exc}"})
        finally:
            self.runs.pop(run.attempt_id, None)
            self._ended += 1
            self._changed.set()
            if run.attempt_id in self._kills:  # its process is gone: the coordinator may start the next attempt
                self._acks.append(self._kills.pop(run.attempt_id))
                await self._send_acks()


async def _forever(job: Callable[[], Awaitable[None]]) -> None:
    """Run a background job; a bug in it is logged and the job restarted, never silently lost."""
    while True:
        try:
            await job()
            return
        except Exception:
            log.exception("%s failed; restarting it", getattr(job, "__name__", job))
            await asyncio.sleep(1.0)
