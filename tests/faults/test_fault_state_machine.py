"""A Hypothesis state machine over the task lifecycle, run against the real coordinator service (real Redis and
PostgreSQL): submit, lease, report success / failure / handback, heartbeats, a lost lease reply, worker loss,
task timeout, graceful stop, drain, cancel, retry, requeue, a worker confirming the attempts it was told to
kill gone, time passing for the retry backoff and Redis losing the index, in any order.

A model says what each task's state must be; after every step the invariants are checked against PostgreSQL and
the Redis index: each task is in exactly one state and the index agrees with the record (pending tasks queued or
backing off, running ones in the running set and their worker's set, finished ones in neither), attempts only
grow and match the attempts table, a finished task changes only when an operator retries it, no acknowledged
task disappears, and a task whose old attempt the coordinator ended (cancel, requeue, timeout) is not leased
again until that attempt's worker confirmed it gone or was lost. Stale reports and operator actions aimed at an
old attempt must be refused.

Time is moved, not waited for, so every run is the same: a worker's last heartbeat, a task's start or the end
of its retry backoff are set back, then the real reaper, timeout timer or retry timer runs.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis import Redis as SyncRedis
from sqlalchemy import func, update

from coordinator.config import Settings
from coordinator.errors import IllegalTransition, StaleAttempt
from coordinator.models import Task
from coordinator.schemas import WorkerCommandSpec
from coordinator.service import Coordinator
from coordinator.states import Action, TaskStatus
from tests.faults.store_view import read_stores
from tests.helpers import Agent, configured, submit

pytestmark = pytest.mark.slow
T = TypeVar("T")

EXAMPLES = int(os.environ.get("AIDD_STATE_MACHINE_EXAMPLES", "50"))
"""Sequences of steps tried (each up to STEPS long); more for a soak."""
STEPS = 40
RETRY_DELAY, RETRY_MAX_DELAY = 3600, 7200
"""Backoff of the coordinator under test: no retry comes due unless the machine moves time."""
MAX_WORKER_LOSSES = 3
RETRYABLE = ("error", "timeout", "worker_lost")
OUTCOMES = st.sampled_from(["succeeded", "error", "permanent", "timeout", "handback"])
"""How an attempt ends, as its worker reports it."""


@dataclass
class World:
    """The coordinator under test and the event loop it runs on (the state machine's rules are synchronous)."""

    loop: asyncio.AbstractEventLoop
    coordinator: Coordinator
    steps: collections.Counter[str] = field(default_factory=collections.Counter)
    """How often each rule ran (for the figures)."""
    checked: collections.Counter[str] = field(default_factory=collections.Counter)
    """Refusals and rebuilds the machine saw happen as they must, by kind (for the figures)."""

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)


def counted(method: Callable[..., None]) -> Callable[..., None]:
    """Count the rule's runs in the world's figures."""
    @functools.wraps(method)
    def run(self: Lifecycle, *args: Any, **kwargs: Any) -> None:
        self.world.steps[method.__name__] += 1
        method(self, *args, **kwargs)
    return run


@dataclass
class ModelTask:
    """What a task's state must be."""

    id: str
    max_retries: int
    retry_on: frozenset[str]
    status: TaskStatus = TaskStatus.PENDING
    delayed: bool = False
    """Backing off after a failed attempt: in the delayed set, not its queue, until time passes."""
    backoff: bool = False
    """Its record has a due time (set by a retry backoff, cleared by a lease, requeue or retry): a pending task
    can be requeued only then."""
    attempts: int = 0
    retry_count: int = 0
    worker_losses: int = 0
    attempt: dict[str, Any] | None = None
    """The last leased attempt (what the lease answered); current while running."""
    agent: int | None = None
    """The agent running it (index into the machine's agents)."""
    finished: tuple[Any, ...] | None = None
    """Status, result, error, finished_at and attempts when it finished (they must not change until a retry)."""
    stopping: int | None = None
    """The agent told to kill an attempt of it the coordinator ended: not leased until it confirms, or is gone."""


@dataclass
class ModelAgent:
    """What a worker's state must be."""

    agent: Agent
    online: bool = True
    drained: bool = False
    held: set[str] = field(default_factory=set)
    """Tasks it ran at some point (a heartbeat may list them; those it no longer owns come back as stale)."""


class Lifecycle(RuleBasedStateMachine):
    """Rules are lifecycle operations; the model decides what each must do, the invariants check the stores."""

    world: World

    def __init__(self) -> None:
        super().__init__()
        self.group = f"g{uuid.uuid4().hex[:10]}"  # this run's tasks and agents only ever meet each other
        self.tasks: dict[str, ModelTask] = {}
        self.agents: list[ModelAgent] = []
        self.stale: list[tuple[int, dict[str, Any]]] = []
        """(agent, attempt) pairs whose attempt is no longer current: every report of them must be refused."""
        self.seen_attempts: dict[str, int] = {}

    @property
    def coordinator(self) -> Coordinator:
        return self.world.coordinator

    # -- helpers ----------------------------------------------------------------------------------

    def of_status(self, *statuses: TaskStatus) -> list[ModelTask]:
        return [t for t in self.tasks.values() if t.status in statuses]

    def runnable(self) -> list[str]:
        """Pending tasks that are due, in the order a lease must hand them out (one priority: FIFO)."""
        return [t.id for t in self.of_status(TaskStatus.PENDING) if not t.delayed and t.stopping is None]

    def end_attempt(self, task: ModelTask, killed: bool = False) -> None:
        """The task's running attempt is over: reports of it are stale from now on. `killed`: the coordinator
        ended it, so its process may still run until its worker confirms it gone."""
        assert task.attempt is not None and task.agent is not None
        self.stale.append((task.agent, task.attempt))
        if killed:
            task.stopping = task.agent
        task.agent = None

    def release(self, index: int) -> None:
        """The worker confirmed the attempts it was told to kill gone (or is gone itself)."""
        for task in self.tasks.values():
            if task.stopping == index:
                task.stopping = None

    def failed_attempt(self, task: ModelTask, reason: str, killed: bool = False) -> None:
        """An attempt that ended in error, permanently or by timeout: a retry after a backoff, or the end."""
        self.end_attempt(task, killed)
        if reason in task.retry_on and task.retry_count < task.max_retries:
            task.status, task.retry_count, task.delayed, task.backoff = TaskStatus.PENDING, \
                task.retry_count + 1, True, True
        else:
            task.status = TaskStatus.TIMEOUT if reason == "timeout" else TaskStatus.FAILED

    def requeued(self, task: ModelTask, killed: bool = False) -> None:
        """Back to the queue at once, nothing counted (handback, graceful stop, operator requeue)."""
        if task.status == TaskStatus.RUNNING:
            self.end_attempt(task, killed)
        task.status, task.delayed, task.backoff = TaskStatus.PENDING, False, False

    def pick(self, data: st.DataObject, tasks: list[ModelTask]) -> ModelTask:
        """One of `tasks` (listed in submission order: ids are random, the draws must not depend on them)."""
        return data.draw(st.sampled_from(tasks), label="task")

    def running(self) -> bool:
        return any(t.status == TaskStatus.RUNNING for t in self.tasks.values())

    def add_tasks(self, count: int, max_retries: int, retry_on: frozenset[str]) -> None:
        ids = self.world.run(submit(self.coordinator, count, group=self.group, max_retries=max_retries,
                                    retry_on=sorted(retry_on)))
        for task_id in ids:
            self.tasks[task_id] = ModelTask(task_id, max_retries, retry_on)

    def add_agent(self) -> None:
        # a host name of its own: a new example's agent must not take back an earlier example's worker (and its drain)
        agent = self.world.run(Agent.register(self.coordinator, hostname=f"sm-{uuid.uuid4().hex[:8]}",
                                              groups=[self.group], cpu_cores=16))
        self.agents.append(ModelAgent(agent))

    # -- rules ------------------------------------------------------------------------------------

    @initialize(max_retries=st.integers(0, 2), retry_on=st.sets(st.sampled_from(RETRYABLE)).map(frozenset))
    def start(self, max_retries: int, retry_on: frozenset[str]) -> None:
        """Two workers and three tasks to begin with, so most steps meet something to act on."""
        self.add_agent()
        self.add_agent()
        self.add_tasks(3, max_retries, retry_on)

    @rule(count=st.integers(1, 3), max_retries=st.integers(0, 2),
          retry_on=st.sets(st.sampled_from(RETRYABLE)).map(frozenset))
    @counted
    def submit(self, count: int, max_retries: int, retry_on: frozenset[str]) -> None:
        self.add_tasks(count, max_retries, retry_on)

    @precondition(lambda self: len(self.agents) < 3)
    @rule()
    @counted
    def register(self) -> None:
        self.add_agent()

    def lease_for(self, index: int, max_tasks: int) -> list[ModelTask]:
        """Lease for one agent: the first due tasks in FIFO order, up to max_tasks; an offline or drained
        worker gets none."""
        model = self.agents[index]
        leased = self.world.run(model.agent.lease(max_tasks))
        if not model.online or model.drained:
            assert leased == [], f"an {'offline' if not model.online else 'drained'} worker leased {leased}"
            return []
        due = self.runnable()
        ids = [t["task_id"] for t in leased]
        assert ids == due[:max_tasks], f"leased {ids}, not the first {max_tasks} of the due tasks {due}"
        for attempt in leased:
            task = self.tasks[attempt["task_id"]]
            task.status, task.attempts, task.attempt, task.agent = TaskStatus.RUNNING, task.attempts + 1, attempt, index
            task.delayed = task.backoff = False
            assert attempt["attempt"] == task.attempts
            model.held.add(task.id)
        return [self.tasks[i] for i in ids]

    def report_end(self, task: ModelTask, outcome: str) -> None:
        """The worker reports how the task's current attempt ended: accepted, and it decides the next state."""
        assert task.agent is not None and task.attempt is not None
        event = outcome if outcome in ("succeeded", "handback") else "failed"
        fields: dict[str, Any] = {"result": {"attempt": task.attempts}} if outcome == "succeeded" else {}
        if event == "failed":
            fields = {"reason": outcome, "error": f"{outcome} in attempt {task.attempts}"}
        accepted = self.world.run(self.agents[task.agent].agent.report(task.attempt, event, **fields))
        assert accepted, f"the current attempt's report ({outcome}) was refused: {task}"
        if outcome == "succeeded":
            self.end_attempt(task)
            task.status = TaskStatus.SUCCEEDED
        elif outcome == "handback":
            self.requeued(task)
        else:
            self.failed_attempt(task, outcome)

    def usable_first(self) -> list[int]:
        """Agent indexes, the online and undrained ones first (what a draw picks most)."""
        return sorted(range(len(self.agents)), key=lambda i: not self.agents[i].online or self.agents[i].drained)

    @rule(data=st.data(), max_tasks=st.integers(1, 3))
    @counted
    def lease(self, data: st.DataObject, max_tasks: int) -> None:
        self.lease_for(data.draw(st.sampled_from(self.usable_first()), label="agent"), max_tasks)

    @precondition(running)
    @rule(data=st.data(), outcome=OUTCOMES)
    @counted
    def report(self, data: st.DataObject, outcome: str) -> None:
        self.report_end(self.pick(data, self.of_status(TaskStatus.RUNNING)), outcome)

    @rule(outcome=OUTCOMES)
    @counted
    def run_one(self, outcome: str) -> None:
        """An agent's loop in one step: the first usable worker leases one task and reports how it ended."""
        for task in self.lease_for(self.usable_first()[0], 1):
            self.report_end(task, outcome)

    @precondition(lambda self: self.stale or (len(self.agents) > 1 and self.running()))
    @rule(data=st.data(), event=st.sampled_from(["succeeded", "failed", "handback", "started", "log"]))
    @counted
    def refused_report(self, data: st.DataObject, event: str) -> None:
        """A report of an attempt that is over (late, after a requeue, a loss, a timeout, a cancel), or of
        another worker's running attempt, is refused and changes nothing."""
        foreign = len(self.agents) > 1 and self.running() and (not self.stale or data.draw(st.booleans()))
        if foreign:
            task = self.pick(data, self.of_status(TaskStatus.RUNNING))
            index = data.draw(st.sampled_from([i for i in range(len(self.agents)) if i != task.agent]))
            assert task.attempt is not None
            attempt = task.attempt
        else:
            index, attempt = data.draw(st.sampled_from(self.stale), label="stale attempt")
        fields: dict[str, Any] = {"lines": [{"line": "late"}]} if event == "log" else {}
        accepted = self.world.run(self.agents[index].agent.report(attempt, event, **fields))
        assert not accepted, f"a report ({event}) of {'another worker' if foreign else 'an attempt that is over'} " \
                             f"was accepted: {attempt}"
        self.world.checked["another worker's report" if foreign else "stale report"] += 1

    @precondition(lambda self: self.agents)
    @rule(data=st.data())
    @counted
    def heartbeat(self, data: st.DataObject) -> None:
        """A heartbeat listing some of the tasks the worker ran: those it no longer runs come back stale (and
        nothing it does run is taken from it); a worker declared dead comes back."""
        index = data.draw(st.integers(0, len(self.agents) - 1), label="agent")
        model = self.agents[index]
        held = [t for t in self.tasks if t in model.held]
        listed = data.draw(st.sets(st.sampled_from(held)), label="listed") if held else set()
        reply = self.world.run(model.agent.heartbeat(*sorted(listed)))
        owned = {t.id for t in self.of_status(TaskStatus.RUNNING) if t.agent == index}
        assert set(reply["stale_tasks"]) == listed - owned, (reply, listed, owned)
        model.online = True
        assert reply["status"] == ("draining" if model.drained else "online"), reply

    @precondition(lambda self: any(t.status == TaskStatus.RUNNING and self.agents[t.agent].online
                                   for t in self.tasks.values() if t.agent is not None))
    @rule(data=st.data())
    @counted
    def lease_reply_lost(self, data: st.DataObject) -> None:
        """A task leased a heartbeat timeout ago (its start is set back) that its worker's heartbeat does not
        list never reached the worker: it goes back to the queue, nothing counted."""
        task = self.pick(data, [t for t in self.of_status(TaskStatus.RUNNING)
                                if t.agent is not None and self.agents[t.agent].online])
        assert task.agent is not None
        core = self.coordinator.core
        back = core.settings.heartbeat_timeout + 60

        async def backdate() -> None:
            async with core.engine.begin() as conn:
                await conn.execute(update(Task).where(Task.id == uuid.UUID(task.id)).values(
                    started_at=Task.started_at - func.make_interval(0, 0, 0, 0, 0, 0, back)))
        self.world.run(backdate())
        model = self.agents[task.agent]
        others = [t.id for t in self.of_status(TaskStatus.RUNNING) if t.agent == task.agent and t is not task]
        reply = self.world.run(model.agent.heartbeat(*others))
        assert reply["stale_tasks"] == [], reply
        self.requeued(task)

    @precondition(lambda self: any(t.stopping is not None for t in self.tasks.values()))
    @rule(data=st.data())
    @counted
    def confirm_stopped(self, data: st.DataObject) -> None:
        """A worker acknowledges the cancel-task commands it got, as an agent does once those processes are gone:
        the tasks that waited for that may be leased again."""
        index = data.draw(st.sampled_from(sorted({t.stopping for t in self.tasks.values() if t.stopping is not None})),
                          label="agent")
        assert self.world.run(self.agents[index].agent.confirm_stopped()) >= 1
        self.release(index)

    @precondition(lambda self: any(a.online for a in self.agents))
    @rule(data=st.data(), lost=st.booleans())
    @counted
    def worker_leaves(self, data: st.DataObject, lost: bool) -> None:
        """Lost: its last heartbeat is set back past the timeout and the real reaper runs; its tasks count a
        worker loss (failed at the cap, or without worker_lost in retry_on). Otherwise a graceful stop: its
        tasks go back to the queue with nothing counted."""
        index = data.draw(st.sampled_from([i for i, a in enumerate(self.agents) if a.online]), label="agent")
        agent = self.agents[index].agent
        core = self.coordinator.core
        if lost:
            self.world.run(core.redis.zadd(core.keys.heartbeats,
                                           {str(agent.id): time.time() - core.settings.heartbeat_timeout - 60}))
            assert self.world.run(self.coordinator.timers.reap_dead_workers()) == 1
        else:
            self.world.run(self.coordinator.workers.deregister(agent.id))
        self.agents[index].online = False
        self.release(index)  # what it was told to kill is its keeper's now
        for task in self.of_status(TaskStatus.RUNNING):
            if task.agent != index:
                continue
            if not lost:
                self.requeued(task)
                continue
            self.end_attempt(task)
            task.worker_losses += 1
            if task.worker_losses >= MAX_WORKER_LOSSES or "worker_lost" not in task.retry_on:
                task.status = TaskStatus.FAILED
            else:
                task.status, task.delayed, task.backoff = TaskStatus.PENDING, False, False

    @precondition(lambda self: self.agents)
    @rule(data=st.data(), drain=st.booleans())
    @counted
    def drain_or_resume(self, data: st.DataObject, drain: bool) -> None:
        index = data.draw(st.integers(0, len(self.agents) - 1), label="agent")
        command = WorkerCommandSpec(command="drain" if drain else "resume")
        self.world.run(self.coordinator.workers.send([self.agents[index].agent.id], command, "test"))
        self.agents[index].drained = drain

    @precondition(running)
    @rule(data=st.data())
    @counted
    def time_out(self, data: st.DataObject) -> None:
        """The task's start is set back past its timeout; the real timeout timer runs."""
        task = self.pick(data, self.of_status(TaskStatus.RUNNING))

        async def backdate() -> None:
            async with self.coordinator.core.engine.begin() as conn:
                await conn.execute(update(Task).where(Task.id == uuid.UUID(task.id)).values(
                    started_at=Task.started_at - func.make_interval(0, 0, 0, 0, 1)))  # an hour earlier
        self.world.run(backdate())
        assert self.world.run(self.coordinator.lifecycle.time_out()) == 1
        self.failed_attempt(task, "timeout", killed=True)

    @rule(flush=st.booleans())
    @counted
    def time_passes(self, flush: bool) -> None:
        """Every backoff runs out (their due times are set back) and the timers tick, which puts those tasks back
        in their queues. With `flush`, Redis lost the index first (a FLUSHALL of this coordinator's keys): the
        tick rebuilds it from PostgreSQL, and the invariants check that it agrees."""
        delayed = [t.id for t in self.tasks.values() if t.delayed]
        waiting = [t.id for t in self.tasks.values() if t.delayed and t.stopping is None]  # the others stay parked
        core = self.coordinator.core

        async def move_time() -> None:
            if flush:
                keys = [k async for k in core.redis.scan_iter(match=f"{core.keys.prefix}:*", count=1000)]
                await core.redis.delete(*keys)
            async with core.engine.begin() as conn:
                await conn.execute(update(Task).where(Task.id.in_([uuid.UUID(i) for i in delayed]))
                                   .values(available_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 1)))
            if waiting and not flush:
                await core.redis.zadd(core.keys.delayed, {i: int((time.time() - 1) * 1000) for i in waiting}, xx=True)
            await self.coordinator.timers.tick()
        self.world.run(move_time())
        if flush:
            self.world.checked["index lost and rebuilt from PostgreSQL"] += 1
        for task in self.tasks.values():
            task.delayed = False

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), action=st.sampled_from(list(Action)), aim=st.sampled_from(["none", "current", "old"]))
    @counted
    def operator(self, data: st.DataObject, action: Action, aim: str) -> None:
        """Cancel, retry or requeue one task, maybe aimed at its current or an older attempt: it changes only
        from a state the action allows, and only while the attempt aimed at is still the task's."""
        task = self.pick(data, list(self.tasks.values()))
        attempt_id: uuid.UUID | None = None
        if aim == "current" and task.attempt is not None:
            attempt_id = uuid.UUID(task.attempt["attempt_id"])
        elif aim == "old":
            last = task.attempt["attempt_id"] if task.attempt else None
            older = [a["attempt_id"] for _, a in self.stale if a["task_id"] == task.id and a["attempt_id"] != last]
            if older:
                attempt_id = uuid.UUID(data.draw(st.sampled_from(older), label="old attempt"))
            else:
                aim = "none"
        allowed = {Action.CANCEL: task.status in (TaskStatus.PENDING, TaskStatus.RUNNING),
                   Action.RETRY: task.status.finished,
                   Action.REQUEUE: task.status == TaskStatus.RUNNING
                   or (task.status == TaskStatus.PENDING and task.backoff)}[action]
        try:
            self.world.run(self.coordinator.lifecycle.act(action, [uuid.UUID(task.id)], "test", single=True,
                                                      attempt_id=attempt_id))
        except StaleAttempt:
            assert attempt_id is not None and aim == "old", f"{action} refused as stale: {task}"
            self.world.checked["operator action aimed at an old attempt"] += 1
            return
        except IllegalTransition:
            assert not allowed, f"{action} refused on a {task.status} task: {task}"
            self.world.checked["operator action the task's state does not allow"] += 1
            return
        assert allowed and aim != "old", f"{action} ({aim} attempt) changed a {task.status} task: {task}"
        if action == Action.CANCEL:
            if task.status == TaskStatus.RUNNING:
                self.end_attempt(task, killed=True)
            task.status, task.delayed = TaskStatus.CANCELLED, False
        elif action == Action.REQUEUE:
            self.requeued(task, killed=True)
        else:
            task.status, task.retry_count, task.worker_losses = TaskStatus.PENDING, 0, 0
            task.delayed = task.backoff = False
            task.finished = None

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def the_stores_agree_with_the_model(self) -> None:
        if not self.tasks:
            return
        agents = {i: str(a.agent.id) for i, a in enumerate(self.agents)}
        view = self.world.run(read_stores(self.coordinator.core, list(self.tasks), list(agents.values())))
        for task in self.tasks.values():
            record = view.records.get(task.id)
            assert record is not None, f"acknowledged task {task.id} is gone from PostgreSQL"
            where = f"task {task.id} ({task})"
            assert record["status"] == task.status, f"{where}: PostgreSQL says {record['status']}"
            assert (record["attempts"], record["retry_count"], record["worker_losses"]) == (
                task.attempts, task.retry_count, task.worker_losses), f"{where}: record {record}"
            assert record["attempts"] >= self.seen_attempts.get(task.id, 0), f"{where}: attempts went down"
            self.seen_attempts[task.id] = record["attempts"]
            numbers, open_attempts = view.attempts.get(task.id, ([], 0))
            assert numbers == list(range(1, task.attempts + 1)), f"{where}: attempt rows {numbers}"
            assert open_attempts == (1 if task.status == TaskStatus.RUNNING else 0), (
                f"{where}: {open_attempts} attempts without an end")
            at = view.index[task.id]
            if task.status == TaskStatus.PENDING:
                assert not at.running and at.worker is None, f"{where}: pending but indexed as running: {at}"
                assert at.queued != at.delayed, f"{where}: must be queued or backing off, one of them: {at}"
                waits = task.delayed or task.stopping is not None  # backing off, or its old attempt stopping
                assert at.delayed == waits, f"{where}: {'not ' if waits else ''}in the delayed set"
            elif task.status == TaskStatus.RUNNING:
                assert task.attempt is not None and task.agent is not None
                assert str(record["attempt_id"]) == task.attempt["attempt_id"], f"{where}: attempt {record}"
                assert str(record["worker_id"]) == agents[task.agent], f"{where}: worker {record}"
                assert at.running and not at.queued and not at.delayed, f"{where}: indexed {at}"
                assert at.worker == agents[task.agent], f"{where}: not in its worker's task set: {at}"
            else:
                assert not (at.queued or at.delayed or at.running or at.worker), f"{where}: finished, indexed {at}"
                snapshot = (record["status"], record["result"], record["error"], record["finished_at"],
                            record["attempts"])
                if task.finished is None:
                    task.finished = snapshot
                assert snapshot == task.finished, f"{where}: a finished task changed: {task.finished} -> {snapshot}"


def test_lifecycle_state_machine(settings: Settings, clean_db: None, redis: SyncRedis) -> None:
    """Random sequences of lifecycle operations keep every invariant, and every step does what the model says."""
    config = configured(settings, heartbeat_timeout=3600, retry_base_delay=RETRY_DELAY,
                        retry_max_delay=RETRY_MAX_DELAY, max_worker_losses=MAX_WORKER_LOSSES,
                        reconcile_interval=10**9)
    loop = asyncio.new_event_loop()
    coordinator = Coordinator.build(config)
    loop.run_until_complete(coordinator.start(timers=False))
    started = time.monotonic()
    try:
        machine: type[Lifecycle] = type("LifecycleOnThisCoordinator", (Lifecycle,), {"world": World(loop, coordinator)})
        run_state_machine_as_test(machine, settings=hypothesis_settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck)))
    finally:
        loop.run_until_complete(coordinator.stop())
        loop.close()
    world = machine.world
    print(f"\nstate machine: {EXAMPLES} sequences of up to {STEPS} steps; {sum(world.steps.values())} steps "
          f"in {time.monotonic() - started:.1f}s")
    print("  steps: " + ", ".join(f"{name} {n}" for name, n in world.steps.most_common()))
    print("  checked: " + ", ".join(f"{name} {n}" for name, n in world.checked.most_common()))
