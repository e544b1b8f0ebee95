"""Warm plugin hosts (nodeagent.warm): tasks one after another in one process keep the guarantees of a fresh one.

Each test runs real host processes through `TaskRun`, as the agent does, with a sink that records the
events and log lines instead of a coordinator: output goes to the task that printed it, the environment,
working dir and child processes of one task never reach the next, and a task that is stopped or takes
its interpreter down costs its host, not the agent.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent import warm
from nodeagent.commands import agent_env, plugin_env
from nodeagent.runner import TaskRun
from nodeagent.warm import PluginPool
from tests.support.pids import gone
from tests.support.sink import Sink

PLUGINS = """
import os, subprocess, sys, threading, time
from nodeagent.plugins import task_type

@task_type("say")
def say(params, context):
    sys.stdout.write(params["out"])
    sys.stdout.flush()
    if params.get("err"):
        print(params["err"], file=sys.stderr)
    return {"cwd": os.getcwd(), "env": os.environ.get("LEAK"), "files": sorted(os.listdir(".")),
            "task_only": os.environ.get("TASK_ONLY"), "home": os.environ.get("HOME"),
            "task_id": os.environ.get("AIDD_TASK_ID")}

@task_type("dirty")
def dirty(params, context):
    os.environ["LEAK"] = "yes"
    os.environ["HOME"] = "/nowhere"
    open("left-behind.txt", "w").write("x")
    os.makedirs("sub/dir")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    context.progress(0.5, "half")
    return {"child": child.pid, "pid": os.getpid()}

@task_type("sleepy")
def sleepy(params, context):
    print("going to sleep", flush=True)
    time.sleep(params.get("seconds", 60))
    return {}

@task_type("exits")
def exits(params, context):
    sys.exit(params.get("code", 0))

@task_type("threads")
def threads(params, context):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    return {"pid": os.getpid()}

@task_type("big")
def big(params, context):
    print("x" * params["out"], flush=True)  # more than a pipe holds in one line
    sys.stderr.write("e\\n" * params["err"])
    subprocess.run([sys.executable, "-c", "print('from a child')"])  # straight into the pipe, not via this process
    return {"data": "r" * params["result"]}

@task_type("nan")
def nan(params, context):
    return {"score": float(params["value"])}

@task_type("retires")
def retires(params, context):
    if params.get("retire"):
        context.retire_host()
    return {"pid": os.getpid()}
"""


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[PluginPool]:
    (tmp_path / "warm_test_plugins.py").write_text(textwrap.dedent(PLUGINS))
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    base = agent_env({**os.environ, "PYTHONPATH": path})
    plugins = PluginPool(plugin_env(["warm_test_plugins"], base), tmp_path / "work", size=2)
    yield plugins
    await plugins.close()


def run(pool: PluginPool, sink: Sink, tmp_path: Path, n: int, task_type: str, timeout_s: float = 60,
        **params: Any) -> TaskRun:
    task = {"task_id": f"t{n}", "attempt_id": f"a{n}", "attempt": 1, "task_type": task_type,
            "input_params": params, "timeout_s": timeout_s}
    return TaskRun(task, tmp_path / "work", sink, ["warm_test_plugins"], kill_grace=1.0, plugins=pool,
                   environ={**os.environ, "PYTHONPATH": str(tmp_path)})


@pytest.mark.anyio
async def test_output_goes_to_the_task_that_printed_it(pool: PluginPool, tmp_path: Path) -> None:
    sink = Sink()
    outs = ["a\nb\n", "no newline at the end", "\n\nblank lines\n\n", ""]
    for n, out in enumerate(outs):
        await run(pool, sink, tmp_path, n, "say", out=out, err=f"err {n}").run()
    assert [line for stream, line in sink.lines["t0"] if stream == "stdout"] == ["a", "b"]
    assert [line for stream, line in sink.lines["t1"] if stream == "stdout"] == ["no newline at the end"]
    assert [line for stream, line in sink.lines["t2"] if stream == "stdout"] == ["", "", "blank lines", ""]
    assert [line for stream, line in sink.lines.get("t3", []) if stream == "stdout"] == []
    for n in range(len(outs)):
        assert ("stderr", f"err {n}") in sink.lines[f"t{n}"]
        assert sink.final(f"t{n}")["event"] == "succeeded"
    assert len(pool.hosts) == 1  # one after another: one host did them all


@pytest.mark.anyio
async def test_a_task_leaves_nothing_behind_for_the_next(pool: PluginPool, tmp_path: Path) -> None:
    sink = Sink()
    await run(pool, sink, tmp_path, 0, "dirty", env={"TASK_ONLY": "1"}).run()
    dirty = sink.final("t0")
    assert dirty["event"] == "succeeded"
    assert next(e for e in sink.events if e["event"] == "progress")["progress"] == 0.5
    assert gone(dirty["result"]["child"])  # what the task started died when it returned
    await run(pool, sink, tmp_path, 1, "say", out="").run()
    clean = sink.final("t1")["result"]
    assert clean["env"] is None and clean["files"] == []  # same host, fresh environment and empty dir
    assert clean["task_only"] is None and clean["home"] == os.environ.get("HOME") and clean["task_id"] == "t1"
    assert len(pool.hosts) == 1


@pytest.mark.anyio
async def test_each_task_sees_its_own_variables_only(pool: PluginPool, tmp_path: Path) -> None:
    """A host leaves a task's variables in place until the next task's replace them: the next one must still see
    only its own (set, changed or gone), and a variable of the agent's own the task overrode is back."""
    sink = Sink()
    home = os.environ.get("HOME")
    await run(pool, sink, tmp_path, 0, "say", out="", env={"TASK_ONLY": "1", "HOME": "/task-home"}).run()
    await run(pool, sink, tmp_path, 1, "say", out="", env={"TASK_ONLY": "2"}).run()
    await run(pool, sink, tmp_path, 2, "say", out="").run()
    seen = [sink.final(f"t{n}")["result"] for n in range(3)]
    assert [(s["task_only"], s["home"], s["task_id"]) for s in seen] == [
        ("1", "/task-home", "t0"), ("2", home, "t1"), (None, home, "t2")]
    assert len(pool.hosts) == 1


@pytest.mark.anyio
async def test_a_timeout_kills_the_host_and_the_next_task_gets_a_new_one(pool: PluginPool, tmp_path: Path) -> None:
    sink = Sink()
    slow = run(pool, sink, tmp_path, 0, "sleepy", timeout_s=1)
    started = time.monotonic()
    await slow.run()
    failed = sink.final("t0")
    assert failed["event"] == "failed" and failed["reason"] == "timeout" and "going to sleep" in failed["error"]
    assert time.monotonic() - started < 10
    assert slow.pid is not None and gone(slow.pid)
    await run(pool, sink, tmp_path, 1, "say", out="still here\n").run()
    assert sink.final("t1")["event"] == "succeeded"


@pytest.mark.anyio
async def test_a_stop_kills_a_running_task(pool: PluginPool, tmp_path: Path) -> None:
    sink = Sink()
    task = run(pool, sink, tmp_path, 0, "sleepy")
    running = asyncio.create_task(task.run())
    for _ in range(200):
        if sink.lines.get("t0"):
            break
        await asyncio.sleep(0.05)
    task.stop("cancel")
    await asyncio.wait_for(running, 15)
    assert [e["event"] for e in sink.events] == ["started"]  # a cancel is not reported by the agent


@pytest.mark.anyio
async def test_exiting_the_interpreter_or_leaving_threads_retires_the_host(pool: PluginPool, tmp_path: Path) -> None:
    sink = Sink()
    await run(pool, sink, tmp_path, 0, "exits", code=0).run()
    assert sink.final("t0")["event"] == "succeeded"
    await run(pool, sink, tmp_path, 1, "exits", code=4).run()
    assert sink.final("t1")["event"] == "failed"
    await run(pool, sink, tmp_path, 2, "threads").run()
    await run(pool, sink, tmp_path, 3, "threads").run()
    first, second = (sink.final(f"t{n}")["result"]["pid"] for n in (2, 3))
    assert first != second  # the host the thread was left in did not run another task


@pytest.mark.anyio
async def test_a_plugin_may_retire_its_host(pool: PluginPool, tmp_path: Path) -> None:
    """`context.retire_host()` (e.g. CUDA initialised for other GPUs): its result counts, its host runs no more."""
    sink = Sink()
    for n, retire in enumerate((False, False, True, False)):
        await run(pool, sink, tmp_path, n, "retires", retire=retire).run()
    pids = [sink.final(f"t{n}")["result"]["pid"] for n in range(4)]
    assert sink.final("t2")["event"] == "succeeded"
    assert pids[0] == pids[1] == pids[2] != pids[3]


@pytest.mark.anyio
async def test_hosts_are_sized_by_cores_not_slots(tmp_path: Path) -> None:
    """Eight slots on two cores: a stream of short tasks shares two hosts even when every host stays busy past
    `spawn_after` (a loaded machine), where before it would start a host per slot; long tasks still get a host
    each, once every host has been busy for `long_after`."""
    (tmp_path / "warm_test_plugins.py").write_text(textwrap.dedent(PLUGINS))
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    base = agent_env({**os.environ, "PYTHONPATH": path})
    pool = PluginPool(plugin_env(["warm_test_plugins"], base), tmp_path / "work", size=8, cores=2,
                      spawn_after=0.0, long_after=1.0)
    try:
        sink = Sink()
        short = [run(pool, sink, tmp_path, n, "sleepy", seconds=0.05) for n in range(16)]
        await asyncio.gather(*(r.run() for r in short))
        assert [sink.final(f"t{n}")["event"] for n in range(16)] == ["succeeded"] * 16
        assert len(pool.hosts) == 2  # busy past spawn_after (0 s) every time, yet no third host

        long = [run(pool, sink, tmp_path, n, "sleepy", seconds=3) for n in range(100, 104)]
        await asyncio.gather(*(r.run() for r in long))
        assert len(pool.hosts) == 4  # one each: had two waited for the first two hosts, there would be two
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_a_result_with_nan_fails_its_task_not_its_host(pool: PluginPool, tmp_path: Path) -> None:
    """NaN and infinity have no JSON form (Python's json would write them, and the coordinator refuse the report):
    the task fails permanently saying why, and its host serves the next task."""
    sink = Sink()
    await run(pool, sink, tmp_path, 0, "nan", value="nan").run()
    await run(pool, sink, tmp_path, 1, "nan", value="1.5").run()
    failed = sink.final("t0")
    assert (failed["event"], failed["reason"]) == ("failed", "permanent")
    assert failed["error"].startswith("the result is not JSON: Out of range float values")
    assert sink.final("t1")["result"] == {"score": 1.5}


@pytest.mark.anyio
async def test_much_output_and_large_results_go_to_their_own_task(pool: PluginPool, tmp_path: Path) -> None:
    """Output well past a pipe's capacity (and the agent's reads), from the host and from a task's child, and
    results of megabytes (past any reader's line limit): each task gets exactly its own, tasks interleaved."""
    sink = Sink()
    sizes = [(300_000, 0, 10), (0, 40_000, 3_000_000), (5, 1, 0), (0, 0, 70_000)]
    await asyncio.gather(*(run(pool, sink, tmp_path, n, "big", out=out, err=err, result=result).run()
                           for n, (out, err, result) in enumerate(sizes)))
    for n, (out, err, result) in enumerate(sizes):
        assert sink.final(f"t{n}")["result"] == {"data": "r" * result}
        stdout = [line for stream, line in sink.lines[f"t{n}"] if stream == "stdout"]
        stderr = [line for stream, line in sink.lines[f"t{n}"] if stream == "stderr"]
        assert stdout == ["x" * min(out, 4000) + (" …[cut]" if out > 4000 else ""), "from a child"]
        assert stderr == ["e"] * err


@pytest.mark.anyio
async def test_many_short_tasks_on_two_hosts_keep_their_output_apart(pool: PluginPool, tmp_path: Path) -> None:
    sink = Sink()
    await asyncio.gather(*(run(pool, sink, tmp_path, n, "say", out=f"{n}\n" * (n % 3) + f"{n} last",
                               err=str(n)).run() for n in range(60)))
    for n in range(60):
        lines = sink.lines[f"t{n}"]
        assert [line for stream, line in lines if stream == "stdout"] == [str(n)] * (n % 3) + [f"{n} last"]
        assert [line for stream, line in lines if stream == "stderr"] == [str(n)]
    assert len(pool.hosts) <= 2


@pytest.mark.anyio
async def test_a_reply_over_the_limit_costs_its_host_not_the_agent(pool: PluginPool, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "REPLY_LIMIT", 1 << 20)
    sink = Sink()
    await run(pool, sink, tmp_path, 0, "big", out=0, err=0, result=2 << 20).run()
    assert sink.final("t0")["event"] == "failed"
    await run(pool, sink, tmp_path, 1, "big", out=0, err=0, result=1000).run()
    assert sink.final("t1")["result"] == {"data": "r" * 1000}
