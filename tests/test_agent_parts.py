"""The node agent's parts on their own: group detection, the GPU probe (fake, and NVML absent), output lines,
task commands, lease accounting, and the reporter against the real API."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from coordinator.server import BackgroundServer
from nodeagent import fastjson
from nodeagent.api import CoordinatorApi
from nodeagent.commands import BadTask, build_command, shell_argv
from nodeagent.gpu import FakeGpus, GpuProcess, NvmlProbe, probe_from_env
from nodeagent.inventory import describe_host, detect_group, serve_groups, usable_cpus
from nodeagent.keeper import Keeper
from nodeagent.lines import CUT_MARK, LineSplitter
from nodeagent.reporter import STARTED_WAIT_S, Reporter
from nodeagent.runner import TaskRun
from nodeagent.telemetry import Telemetry, cpu_places
from tests.support.sink import Sink
from tests.support.waiting import wait_until

# -- groups ---------------------------------------------------------------------------------------


def test_group_detection_order(tmp_path: Path) -> None:
    assert detect_group({"WORKER_GROUP": "gpu-farm"}, tmp_path) == "gpu-farm"
    assert detect_group({}, tmp_path) == platform.system().lower()
    (tmp_path / "var/run/secrets/kubernetes.io").mkdir(parents=True)
    assert detect_group({}, tmp_path) == "k8s"
    (tmp_path / ".dockerenv").touch()
    assert detect_group({}, tmp_path) == "docker"  # docker is checked before k8s
    assert detect_group({"WORKER_GROUP": "named"}, tmp_path) == "named"  # and the variable before both


def test_groups_served(tmp_path: Path) -> None:
    (tmp_path / ".dockerenv").touch()
    assert serve_groups([], {}, tmp_path) == ["default", "docker"]  # unconfigured: also the tasks with no group
    assert serve_groups([], {"WORKER_GROUP": "a,b"}, tmp_path) == ["a", "b"]
    assert serve_groups(["gpu"], {"WORKER_GROUP": "a"}, tmp_path) == ["gpu"]


# -- GPUs -----------------------------------------------------------------------------------------


def test_fake_gpus_inventory_usage_and_registration() -> None:
    probe = probe_from_env({"AIDD_FAKE_GPUS": '[{"name": "A100", "memory_gb": 80}, {"name": "T4", "memory_gb": 16, '
                                              '"utilization": 12.5}]'})
    assert isinstance(probe, FakeGpus)
    assert [(g.index, g.name, g.memory_gb) for g in probe.inventory()] == [(0, "A100", 80.0), (1, "T4", 16.0)]
    assert [u["utilization"] for u in probe.usage()] == [0.0, 12.5]
    probe.set_busy([0])
    busy = probe.usage()[0]
    assert busy["utilization"] > 50 and busy["memory_used_gb"] > 0 and busy["temperature"] is not None
    host = describe_host(probe.inventory(), ["gpu"], ["a100"], [], None, hostname="h")
    body = host.registration()
    assert body["gpus"][1] == {"index": 1, "name": "T4", "uuid": "GPU-fake-0001", "memory_gb": 16.0}
    assert body["labels"] == ["a100", "gpu"] and body["slots"] == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity masks and two cores to leave one out")
def test_an_agent_pinned_to_one_core_counts_one() -> None:
    """An agent under `taskset` or in a container's cpuset registers the cores it may run on and as many slots,
    not the machine's: it would otherwise take CPU tasks for cores it cannot use."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from nodeagent.inventory import describe_host; h = describe_host([], [], [], [], None); "
            "print(h.cpu_cores, h.slots)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["1.0", "1"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity masks and two cores to leave one out")
def test_a_pinned_agent_reports_the_use_of_its_own_core() -> None:
    """Pinned to one core that a loop keeps busy, the agent reports that core nearly full, not the machine's mean
    (which the other, idler cores would pull down)."""
    code = ("import os, time; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from nodeagent.gpu import FakeGpus; from nodeagent.inventory import describe_host; "
            "from nodeagent.telemetry import Telemetry; "
            "t = Telemetry(FakeGpus([]), describe_host([], [], [], [], None)); end = time.monotonic() + 1.0\n"
            "while time.monotonic() < end: pass\n"
            "print(t.heartbeat([])['cpu_percent'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert float(out.stdout) > 80


def test_cpu_use_is_read_at_each_cpus_place_with_cpus_offline(tmp_path: Path) -> None:
    """psutil lists online CPUs only (/proc/stat's cpuN lines): with CPUs 1, 3, 5 offline, CPU 4 is the third entry,
    not the fifth; a CPU not listed has no entry. Without /proc/stat (not Linux) the numbers are the places."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu2 1 2 3 4\ncpu4 1 2 3 4\ncpu6 1 2 3 4\nintr 5\nctxt 9\n")
    assert cpu_places([2, 4, 6], stat) == [1, 2, 3]
    assert cpu_places([0, 3, 4], stat) == [0, 2]
    assert cpu_places([0, 1], tmp_path / "absent") == [0, 1]
    assert len(cpu_places(usable_cpus())) == len(usable_cpus())  # this machine's: every usable CPU is online


@pytest.mark.parametrize("bad", ["[oops", '{"name": "A100"}', "[1, 2]"])
def test_fake_gpus_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="AIDD_FAKE_GPUS"):
        probe_from_env({"AIDD_FAKE_GPUS": bad})


def test_nvml_probe_without_pynvml_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # "import pynvml" now raises ImportError
    probe = NvmlProbe()
    assert probe.inventory() == [] and probe.usage() == [] and probe.processes() == []
    assert isinstance(probe_from_env({}), NvmlProbe)


def test_nvml_probe_on_this_host_never_raises() -> None:
    """With no driver (CI) this is the "no GPUs" case; on a GPU host every list has one entry per GPU."""
    probe = NvmlProbe()
    gpus = probe.inventory()
    assert len(probe.usage()) == len(gpus)
    assert all(g.memory_gb > 0 for g in gpus)
    assert isinstance(probe.processes(), list)


@dataclass
class Run:
    """A running attempt as telemetry sees it (a real process tree behind `pid`)."""

    task_id: str
    attempt_id: str
    pid: int | None
    gpus: list[int]
    resources: dict[str, float] = field(default_factory=dict)

    def pids(self) -> list[int]:
        if self.pid is None:
            return []
        return [self.pid, *(p.pid for p in psutil.Process(self.pid).children(recursive=True))]


def test_task_gpu_use_is_attributed_through_its_process_tree() -> None:
    probe = FakeGpus([{"name": "A100", "memory_gb": 80}, {"name": "A100", "memory_gb": 80}])
    host = describe_host(probe.inventory(), ["gpu"], [], [], 4, hostname="h")
    telemetry = Telemetry(probe, host)
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        grandchild = _wait_child(proc.pid)
        probe.fake_processes = [GpuProcess(grandchild, 1, 12.5), GpuProcess(999_999, 0, 3.0)]
        runs = [Run("t1", "a1", proc.pid, [1], {"cpu": 1, "gpu": 1, "gpu_memory_gb": 20}),
                Run("t2", "a2", None, [0], {"cpu": 2, "gpu": 0.25, "gpu_memory_gb": 10})]
        beat = telemetry.heartbeat(runs)
        assert beat["current_tasks"] == ["t1", "t2"] and len(beat["gpus"]) == 2
        first, second = beat["tasks"]
        assert first["gpu_memory_gb"] == 12.5 and first["gpu_utilization"] > 50  # GPU 1 shows busy
        assert second["gpu_memory_gb"] == 0  # pid 999999 is not in its tree
        free = telemetry.free(runs)
        assert free["cpu"] == max(0.0, host.cpu_cores - 3)
        assert free["gpus"][1]["free"] == 0.0
        assert free["gpus"][0]["free"] == 0.75 and free["gpus"][0]["memory_gb"] <= 70
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def _wait_child(pid: int) -> int:
    children = wait_until(lambda: psutil.Process(pid).children(), 10, f"process {pid} to start a child")
    return children[0].pid


# -- output lines and commands ------------------------------------------------------------------


def test_lines_are_split_capped_and_decoded_safely() -> None:
    splitter = LineSplitter(max_bytes=10)
    assert splitter.feed(b"one\r\ntw") == ["one"]
    assert splitter.feed(b"o\n\xff\xfebin\x00\n") == ["two", "\ufffd\ufffdbin\ufffd"]
    assert splitter.feed(b"x" * 25 + b"\nnext") == ["x" * 10 + CUT_MARK]  # the rest of the long line is skipped
    assert splitter.feed(b"y" * 30) == ["next" + "y" * 6 + CUT_MARK]
    assert splitter.feed(b"z" * 1000 + b"\nlast") == []  # still the same overlong line: skipped to its end
    assert splitter.flush() == ["last"]


def test_shell_commands() -> None:
    assert shell_argv({"argv": ["echo", "a b", 3]}) == ["echo", "a b", "3"]
    assert shell_argv({"command": "echo 'a b' $HOME"}) == ["echo", "a b", "$HOME"]  # no shell: nothing expanded
    assert shell_argv({"command": "echo $HOME", "shell": True}) == ["/bin/sh", "-c", "echo $HOME"]
    bad: dict[str, Any]
    for bad in ({}, {"argv": []}, {"argv": "ls"}, {"command": "echo 'unclosed"}, {"argv": [["x"]]}):
        with pytest.raises(BadTask):
            shell_argv(bad)


@pytest.mark.anyio
async def test_a_shell_construct_run_without_a_shell_says_what_to_give(tmp_path: Path) -> None:
    """`for …; do …; done` run without `"shell": true` cannot start `for`: the error says what to give; a
    missing program gets no such hint."""
    sink = Sink()
    for n, command in enumerate(["for i in 1 2; do echo $i; done", "no-such-program-aidd --x"]):
        task = {"task_id": f"t{n}", "attempt_id": f"a{n}", "task_type": "shell", "input_params": {"command": command}}
        await TaskRun(task, tmp_path, sink, []).run()
    assert sink.final("t0")["error"] == ("cannot start 'for': No such file or directory "
                                         '(a shell word: give the task "shell": true)')
    assert sink.final("t1")["error"] == "cannot start 'no-such-program-aidd': No such file or directory"


@pytest.mark.anyio
async def test_a_result_file_with_nan_is_not_json(tmp_path: Path) -> None:
    """Python's json reads NaN and Infinity (and `1e400` as infinity), which JSON and the coordinator do not (it
    refused the task's report: "malformed JSON"): such a result file is a result error, as any file that is not JSON."""
    sink = Sink()
    for n, value in enumerate(["NaN", "-Infinity", "0.5", "-1e400"]):
        command = f'echo "{{\\"score\\": {value}}}" > "$AIDD_RESULT_FILE"'
        task = {"task_id": f"t{n}", "attempt_id": f"a{n}", "task_type": "shell",
                "input_params": {"command": command, "shell": True}}
        await TaskRun(task, tmp_path / f"w{n}", sink, []).run()
    assert sink.final("t0")["result"] == {
        "exit_code": 0, "result_error": "aidd-result.json is not JSON: NaN is not a JSON value (write null)"}
    assert "-Infinity is not a JSON value" in sink.final("t1")["result"]["result_error"]
    assert sink.final("t2")["result"] == {"score": 0.5}
    assert "-1e400 is out of range for a number" in sink.final("t3")["result"]["result_error"]


def test_the_agents_json_is_the_standard_librarys_where_orjson_differs() -> None:
    """orjson reads and writes the agent's messages; where it would refuse a value or read it otherwise, the
    standard library does: nothing the agent sent or read before is lost or changed."""
    plain = {"task": {"id": "t", "n": 3, "x": 0.5, "ok": True, "none": None, "name": "Ångström"}}
    assert fastjson.dumps(plain) == orjson.dumps(plain) and fastjson.loads(fastjson.dumps(plain)) == plain
    assert json.loads(fastjson.dumps({"result": 2**70})) == {"result": 2**70}  # orjson refuses these three
    assert json.loads(fastjson.dumps({1: "a"})) == {"1": "a"}
    assert json.loads(fastjson.dumps({"line": "a\ud800b"})) == {"line": "a?b"}  # as the coordinator takes it
    for text in (b'{"big": 123456789012345678901234567890}', b'[-18446744073709551616, 1e400, NaN]',
                 b'"a\\ud800b"', b'{"id": "00000000000000000000", "n": 18446744073709551615}',
                 b'[-9223372036854775809]'):
        assert repr(fastjson.loads(text)) == repr(json.loads(text))  # orjson: a float, refused, refused, the same
    with pytest.raises(ValueError):
        fastjson.loads(b'{"done": ')


def test_leading_assignments_set_variables(tmp_path: Path) -> None:
    """`GOOS=linux go build -o app .` (worker-group clients' commands) runs `go` with GOOS set, as a shell
    would; an explicit argv runs as given; a command of assignments only is a permanent failure."""
    task = {"task_id": "t", "attempt_id": "a", "task_type": "shell",
            "input_params": {"command": "GOOS=linux CGO_ENABLED=0 go build -o app .", "env": {"GOOS": "darwin"}}}
    command = build_command(task, tmp_path, [], gpu_host=False, base_env={"PATH": "/bin"})
    assert command.argv == ["go", "build", "-o", "app", "."]
    assert (command.env["GOOS"], command.env["CGO_ENABLED"]) == ("linux", "0")
    as_given = {**task, "input_params": {"argv": ["A=1", "true"]}}
    assert build_command(as_given, tmp_path, [], gpu_host=False).argv == ["A=1", "true"]
    with pytest.raises(BadTask, match="runs nothing"):
        build_command({**task, "input_params": {"command": "A=1 B=2"}}, tmp_path, [], gpu_host=False)


def test_task_environment(tmp_path: Path) -> None:
    task = {"task_id": "t", "attempt_id": "a", "attempt": 2, "task_type": "shell", "gpus": [1, 3],
            "input_params": {"argv": ["true"], "env": {"MODE": "fast", "N": 4}, "cwd": "sub"}}
    base = {"PATH": "/bin", "AIDD_AGENT_TOKEN": "secret", "AIDD_API_KEY": "key"}
    command = build_command(task, tmp_path, [], gpu_host=True, base_env=base)
    assert command.cwd == tmp_path / "sub" and not command.plugin
    env = command.env
    assert "AIDD_AGENT_TOKEN" not in env and "AIDD_API_KEY" not in env
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3" and env["MODE"] == "fast" and env["N"] == "4"
    assert env["AIDD_ATTEMPT"] == "2" and env["AIDD_RESULT_FILE"].startswith(str(tmp_path))
    assert env["AIDD_TASK_ID"] == "t" and env["AIDD_ATTEMPT_ID"] == "a"  # a task can tell which attempt it is
    no_gpu = build_command({**task, "gpus": []}, tmp_path, [], gpu_host=True, base_env=base)
    assert no_gpu.env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU task on a GPU host sees no GPU
    assert "CUDA_VISIBLE_DEVICES" not in build_command({**task, "gpus": []}, tmp_path, [], False, base).env
    plugin = build_command({**task, "task_type": "qikprop"}, tmp_path, ["my.plugins"], False, base)
    assert plugin.plugin and plugin.argv[1:3] == ["-m", "nodeagent.plugin_host"]
    assert plugin.env["AIDD_PLUGIN_MODULES"] == "my.plugins"
    # a warm host, which has the agent's environment, is sent only the task's own variables
    assert "PATH" not in plugin.own_env and plugin.own_env["MODE"] == "fast" and plugin.env["PATH"] == "/bin"
    with pytest.raises(BadTask, match="env"):
        build_command({**task, "input_params": {"argv": ["x"], "env": {"A": {"nested": 1}}}}, tmp_path, [], False)


# -- the keeper ------------------------------------------------------------------------------------


def sleeper() -> subprocess.Popen[bytes]:
    """A stand-in task: a process group of its own."""
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_keeper_kills_the_groups_it_holds_when_the_agent_goes() -> None:
    """When its pipe closes (as when the agent dies, however) the keeper kills the groups it still holds."""
    keeper = Keeper()
    keeper.start()
    held, released = sleeper(), sleeper()
    try:
        keeper.hold(held.pid)
        keeper.hold(released.pid)
        keeper.release(released.pid)
        keeper.close()
        assert held.wait(5) == -9
        assert released.poll() is None
    finally:
        for proc in (held, released):
            proc.kill()
            proc.wait(5)


def test_keeper_fences_exclusive_tasks_first_and_the_rest_after_the_grace() -> None:
    """Renewed in time, the keeper leaves tasks alone; once the exclusive deadline runs out it kills the exclusive
    task only, and once the longer deadline runs out every task; `killed_since` says so, and a late renewal logs."""
    keeper = Keeper()
    keeper.start()
    exclusive, other = sleeper(), sleeper()
    since = time.monotonic()
    try:
        keeper.hold(exclusive.pid, exclusive=True)
        keeper.hold(other.pid)
        for _ in range(6):
            keeper.renew(0.3, 0.9)
            time.sleep(0.1)
        assert exclusive.poll() is None and not keeper.killed_since(since, exclusive=True)
        assert exclusive.wait(5) == -9
        assert other.poll() is None
        assert keeper.killed_since(since, exclusive=True) and not keeper.killed_since(since, exclusive=False)
        assert other.wait(5) == -9
        assert keeper.killed_since(since, exclusive=False)
        later = time.monotonic()
        keeper.renew(0.3, 0.9)  # the agent wakes up: it hears what happened
        assert keeper.killed_since(since, exclusive=False) and not keeper.killed_since(later, exclusive=False)
    finally:
        for proc in (exclusive, other):
            proc.kill()
            proc.wait(5)
        keeper.close()


# -- the reporter against the real API ----------------------------------------------------------


@pytest.mark.anyio
async def test_reporter_batches_logs_and_hears_409s(api_server: BackgroundServer) -> None:
    api = CoordinatorApi(api_server.url, None)
    try:
        await api.register({"hostname": "reporter-test"})
        async with httpx.AsyncClient(base_url=api_server.url) as client:
            task_id = (await client.post("/api/v1/tasks", json={"service": "admet", "task_type": "noop"})).json()["id"]
            [leased] = await api.lease({"max_tasks": 1})
            sent: list[int] = []
            refused: list[str] = []

            async def counting(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
                sent.append(sum(len(e.get("lines", ())) for e in events))
                return await api.report(events)

            async def unknown() -> None:
                raise AssertionError("the worker is known")

            reporter = Reporter(counting, refused.append, unknown)
            runner = asyncio.create_task(reporter.run())
            ids = {"task_id": task_id, "attempt_id": leased["attempt_id"]}
            reporter.event({**ids, "event": "started"})
            for i in range(2500):
                reporter.log(task_id, leased["attempt_id"], "stdout", f"line {i}")
            reporter.event({**ids, "event": "succeeded", "result": {"n": 2500}, "exit_code": 0})
            assert await reporter.flushed(10)
            assert sum(sent) == 2500 and len(sent) <= 4  # a few requests, not one per line
            logs = (await client.get(f"/api/v1/tasks/{task_id}/logs", params={"limit": 5000})).json()["lines"]
            assert [ln["line"] for ln in logs][:3] == ["line 0", "line 1", "line 2"]
            task = (await client.get(f"/api/v1/tasks/{task_id}")).json()
            assert task["status"] == "succeeded" and task["result"] == {"n": 2500}

            reporter.event({**ids, "event": "progress", "progress": 0.5})  # the attempt is over: 409
            assert await reporter.flushed(10)
            assert refused == [leased["attempt_id"]]
            runner.cancel()
    finally:
        await api.close()


@pytest.mark.anyio
async def test_a_refused_result_fails_its_task_alone(api_server: BackgroundServer) -> None:
    """A result the coordinator refuses (an integer beyond 64 bits, which it would read as a float) fails that task,
    with the reason, and nothing else: the rest of the batch is delivered."""
    api = CoordinatorApi(api_server.url, None)
    try:
        await api.register({"hostname": "refused-result-test"})
        async with httpx.AsyncClient(base_url=api_server.url) as client:
            for _ in range(2):
                await client.post("/api/v1/tasks", json={"service": "admet", "task_type": "noop"})
            leased = await api.lease({"max_tasks": 2})

            async def unknown() -> None:
                raise AssertionError("the worker is known")

            reporter = Reporter(api.report, lambda attempt: None, unknown)
            for lease, result in zip(leased, ({"n": 2**70}, {"n": 2**63}), strict=True):
                reporter.event({"task_id": lease["task_id"], "attempt_id": lease["attempt_id"], "event": "succeeded",
                                "result": result, "exit_code": 0})
            runner = asyncio.create_task(reporter.run())
            assert await reporter.flushed(10)
            runner.cancel()
            big, fine = [(await client.get(f"/api/v1/tasks/{lease['task_id']}")).json() for lease in leased]
            assert big["status"] == "failed" and "1180591620717411303424 is beyond 64 bits" in big["error"], big
            assert fine["status"] == "succeeded" and fine["result"] == {"n": 2**63}
    finally:
        await api.close()


@pytest.mark.anyio
async def test_a_backlog_goes_in_order_in_requests_of_at_most_500_events_or_a_million_characters() -> None:
    """What waited while the coordinator was away goes in bounded requests (under its body limit), in order."""
    sent: list[list[dict[str, Any]]] = []

    async def send(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sent.append(events)
        return []

    async def unknown() -> None:
        return None

    reporter = Reporter(send, lambda attempt: None, unknown, max_lines=5000)
    for i in range(1100):
        reporter.event({"task_id": f"t{i}", "attempt_id": f"a{i}", "event": "succeeded"})
    for i in range(4):  # four attempts of 1 000 lines of 400 characters: 400 000 characters each
        for _ in range(1000):
            reporter.log(f"l{i}", f"la{i}", "stdout", "x" * 400)
    runner = asyncio.create_task(reporter.run())
    try:
        assert await reporter.flushed(10)
    finally:
        runner.cancel()
    # the events; then logs until a million characters are reached (the request that reaches it goes as it is)
    assert [len(batch) for batch in sent] == [500, 500, 100 + 3, 1]
    assert [e["task_id"] for batch in sent for e in batch] == [f"t{i}" for i in range(1100)] + ["l0", "l1", "l2", "l3"]
    reporter.log("l0", "la0", "stdout", "after")  # the attempt's sent log event takes no more lines: a new one
    assert reporter._events[-1]["lines"] == [{"stream": "stdout", "line": "after"}]


@pytest.mark.anyio
async def test_reporter_buffer_is_bounded_while_the_coordinator_is_away() -> None:
    api = CoordinatorApi("http://127.0.0.1:9", None)
    api.worker_id, api.worker_token = "00000000-0000-0000-0000-000000000000", "t"

    async def unknown() -> None:
        return None

    reporter = Reporter(api.report, lambda attempt: None, unknown, max_lines=100)
    runner = asyncio.create_task(reporter.run())
    try:
        reporter.event({"task_id": "t", "attempt_id": "a", "event": "started"})
        for i in range(250):
            reporter.log("t", "a", "stdout", f"line {i}")
        reporter.event({"task_id": "t", "attempt_id": "a", "event": "failed", "error": "x"})
        assert not await reporter.flushed(0.5)
        for _ in range(100):  # a batch may be on its (failing) way: look once it is back in the buffer
            if not reporter._sending:
                break
            await asyncio.sleep(0.02)
        kinds = [e["event"] for e in reporter._events]
        assert kinds[0] == "started" and kinds[-1] == "failed"  # never dropped
        lines = [ln["line"] for e in reporter._events for ln in e.get("lines", ())]
        assert 90 <= len(lines) <= 100 and lines[-1] == "line 249"  # the tail is kept
        assert reporter.holding() == {"t"}  # ended, not reported: heartbeats still list it
    finally:
        runner.cancel()
        await api.close()


@pytest.mark.anyio
async def test_a_short_tasks_start_goes_with_its_end_a_long_tasks_alone_soon() -> None:
    """`started` waits up to STARTED_WAIT_S for its attempt's end: one report for a short task, not two; a task
    still running by then has its start sent on its own."""
    batches: list[list[str]] = []

    async def send(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batches.append([e["event"] for e in events])
        return [{"status": 200} for _ in events]

    async def unknown() -> None:
        return None

    reporter = Reporter(send, lambda attempt: None, unknown, interval=5.0)
    runner = asyncio.create_task(reporter.run())
    try:
        reporter.event({"task_id": "short", "attempt_id": "s", "event": "started"})
        await asyncio.sleep(0.01)
        reporter.event({"task_id": "short", "attempt_id": "s", "event": "succeeded", "result": {}})
        assert await reporter.flushed(5)
        assert batches == [["started", "succeeded"]]
        reporter.event({"task_id": "long", "attempt_id": "l", "event": "started"})
        sent_by = time.monotonic() + STARTED_WAIT_S + 2.0  # well before the log lines' 5 s
        while not batches[1:] and time.monotonic() < sent_by:
            await asyncio.sleep(0.01)
        assert batches[1:] == [["started"]]  # not held back for its end, nor for the interval of log lines
    finally:
        runner.cancel()


def test_a_flooding_attempt_drops_its_own_lines_not_its_neighbours() -> None:
    """Past the buffer's bound the lines dropped are the flooding attempt's oldest; a quiet neighbour keeps its
    two lines, and the flood's note says how many of its own went."""
    async def never(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise AssertionError("not sent in this test")

    async def unknown() -> None:
        return None

    reporter = Reporter(never, lambda attempt: None, unknown, max_lines=100)
    reporter.log("q", "quiet", "stdout", "hello")
    for i in range(1000):
        reporter.log("f", "flood", "stdout", f"line {i}")
        if i == 500:
            reporter.log("q", "quiet", "stdout", "world")
    quiet = [ln["line"] for e in reporter._events if e["attempt_id"] == "quiet" for ln in e["lines"]]
    flood = [e for e in reporter._events if e["attempt_id"] == "flood"]
    assert quiet == ["hello", "world"]
    assert flood[-1]["lines"][-1]["line"] == "line 999"
    kept = sum(len(e["lines"]) for e in flood)
    assert sum(e["dropped"] for e in flood) == 1000 - kept and kept <= 98
