"""The node agent end to end: real agent processes against a real coordinator (embedded Redis + PostgreSQL).

Short timers (heartbeat 0.5 s, timeout 3 s, retry base 0.2 s) keep the file fast; every wait polls
with a deadline so a loaded machine only makes it slower, not flaky.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.config import Settings
from coordinator.server import BackgroundServer
from nodeagent.gpu import GpuInfo, NvmlProbe
from tests.agent_helpers import AgentProcess
from tests.support.api import Api
from tests.support.pids import gone
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
FAST = {"port": 0, "heartbeat_timeout": 3.0, "lease_max_wait": 2.0}
"""Test timers: a worker silent for 3 s is lost; long-polls end within 2 s (so the server stops quickly)."""


@pytest.fixture
def live(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[BackgroundServer]:
    """The API with its timers on (retries, dead workers, timeouts), as in production but fast."""
    server = BackgroundServer(settings.model_copy(update=FAST), timers=True).start()
    yield server
    server.stop()


@pytest.fixture
def api(live: BackgroundServer) -> Iterator[Api]:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        yield Api(http)


@pytest.fixture
def agents(live: BackgroundServer) -> Iterator[list[AgentProcess]]:
    """Agents a test starts (append to the list); killed afterwards; their output is printed (pytest shows it
    when the test failed)."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
        print(f"--- agent {agent.name} ---\n{agent.output[-6000:]}")


def start_agent(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess], api: Api, name: str,
                *args: str, env: dict[str, str] | None = None) -> tuple[AgentProcess, str]:
    """Start an agent and wait until it has registered; returns it and its worker id."""
    agent = AgentProcess(live.url, tmp_path, name, *args, env=env)
    agents.append(agent)
    worker = wait_until(lambda: api.worker(name), 20, f"agent {name} to register")
    return agent, str(worker["id"])


def child_pid(api: Api, task_id: str) -> int:
    """The pid a task printed as `child=<pid>`."""
    found = wait_until(lambda: [m for line in api.logs(task_id) for m in re.findall(r"child=(\d+)", line)], 20,
                     f"task {task_id} to print its child's pid")
    return int(found[0])


SPAWNS_CHILD = "sleep 300 & echo child=$!; wait"
"""A shell task whose real work is a grandchild of the agent: it must die with its task."""


def test_shell_task_logs_result_and_exit_code(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess],
                                              api: Api) -> None:
    start_agent(live, tmp_path, agents, api, "shell-node", "--slots", "2")
    ok = api.submit(input_params={"argv": [sys.executable, "-c", "import sys; print('hello'); "
                                           "print('warn', file=sys.stderr); sys.stdout.buffer.write(b'bad \\xff\\n')"]})
    with_result = api.submit(input_params={"command": 'echo "{\\"score\\": $((6*7))}" > "$AIDD_RESULT_FILE"',
                                           "shell": True})
    failing = api.submit(input_params={"command": "sh -c 'echo before failing; exit 3'"}, max_retries=0)

    done = api.wait_status(ok, "succeeded")
    assert done["result"] == {"exit_code": 0}
    lines = api.logs(ok)
    assert "hello" in lines and "warn" in lines and "bad \ufffd" in lines
    assert api.wait_status(with_result, "succeeded")["result"] == {"score": 42}
    failed = api.wait_status(failing, "failed")
    assert failed["attempt_history"][-1]["exit_code"] == 3
    assert "exit code 3" in failed["error"] and "before failing" in failed["error"]
    assert "before failing" in api.logs(failing)


def test_plugin_tasks_result_permanent_error_and_unknown_type(live: BackgroundServer, tmp_path: Path,
                                                             agents: list[AgentProcess], api: Api) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "chem_plugins.py").write_text(textwrap.dedent("""
        from nodeagent.plugins import PermanentError, task_type

        @task_type("qikprop")
        def qikprop(params, context):
            if not params.get("smiles"):
                raise PermanentError("input_params.smiles is required")
            context.progress(0.5, "half way")
            print("predicting", len(params["smiles"]), "molecules")
            return {"predicted": {s: len(s) for s in params["smiles"]}, "attempt": context.attempt}
    """))
    start_agent(live, tmp_path, agents, api, "plugin-node", "--plugin-module", "chem_plugins", "--slots", "3",
                env={"PYTHONPATH": str(plugins)})
    good = api.submit("qikprop", input_params={"smiles": ["CCO", "c1ccccc1"]})
    bad = api.submit("qikprop", input_params={}, max_retries=3)
    unknown = api.submit("qikprpo", input_params={}, max_retries=3)

    assert api.wait_status(good, "succeeded")["result"] == {"predicted": {"CCO": 3, "c1ccccc1": 8}, "attempt": 1}
    assert "predicting 2 molecules" in api.logs(good)
    permanent = api.wait_status(bad, "failed")
    assert permanent["attempts"] == 1 and permanent["end_reason"] == "permanent"
    assert "input_params.smiles is required" in permanent["error"]
    unknown_task = api.wait_status(unknown, "failed")
    assert unknown_task["attempts"] == 1 and "unknown task type 'qikprpo'" in unknown_task["error"]
    assert "qikprop" in unknown_task["error"]  # it says which types it does run


def test_failing_task_retries_with_backoff_then_fails(live: BackgroundServer, tmp_path: Path,
                                                       agents: list[AgentProcess], api: Api) -> None:
    start_agent(live, tmp_path, agents, api, "retry-node")
    task_id = api.submit(input_params={"argv": ["sh", "-c", "echo attempt $AIDD_ATTEMPT; exit 1"]}, max_retries=2)

    failed = api.wait_status(task_id, "failed", timeout=30)
    attempts = failed["attempt_history"]
    assert [a["number"] for a in attempts] == [1, 2, 3] and failed["retry_count"] == 2
    assert all(a["exit_code"] == 1 and a["end_reason"] == "error" for a in attempts)
    # each retry waited its backoff (base 0.2 s, doubling) after the previous attempt ended
    for before, after, delay in zip(attempts, attempts[1:], (0.2, 0.4), strict=False):
        gap = _ts(after["leased_at"]) - _ts(before["ended_at"])
        assert gap >= delay * 0.9, (gap, delay)
    assert {f"attempt {n}" for n in (1, 2, 3)} <= set(api.logs(task_id))


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def test_timeout_kills_the_whole_process_tree(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess],
                                              api: Api) -> None:
    start_agent(live, tmp_path, agents, api, "timeout-node")
    task_id = api.submit(input_params={"command": SPAWNS_CHILD, "shell": True}, timeout_s=2, max_retries=0)
    pid = child_pid(api, task_id)
    assert not gone(pid)

    timed_out = api.wait_status(task_id, "timeout", timeout=20)
    assert "timed out after 2s" in timed_out["error"]
    wait_until(lambda: gone(pid), 10, f"the task's child {pid} to be killed")


def test_cancel_kills_a_running_task_tree(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess],
                                          api: Api) -> None:
    start_agent(live, tmp_path, agents, api, "cancel-node")
    task_id = api.submit(input_params={"command": SPAWNS_CHILD, "shell": True})
    pid = child_pid(api, task_id)

    assert api.http.delete(f"/api/v1/tasks/{task_id}").status_code == 200
    wait_until(lambda: gone(pid), 15, f"the cancelled task's child {pid} to be killed")
    assert api.task(task_id)["status"] == "cancelled"
    # the agent took the cancel-task command and acknowledged it
    worker = api.worker("cancel-node")
    assert worker is not None
    wait_until(lambda: not api.http.get(f"/api/v1/workers/{worker['id']}/commands").json()["items"], 10,
             "the command to be acknowledged")


def test_task_of_a_killed_agent_succeeds_on_another(live: BackgroundServer, tmp_path: Path,
                                                    agents: list[AgentProcess], api: Api) -> None:
    first, first_id = start_agent(live, tmp_path, agents, api, "doomed-node")
    script = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(1.5); print('done')"
    task_id = api.submit(input_params={"argv": [sys.executable, "-c", script]})
    running = api.wait_status(task_id, "running")
    assert running["worker_id"] == first_id
    pid = int(wait_until(lambda: [ln.split()[1] for ln in api.logs(task_id) if ln.startswith("pid ")], 15,
                       "the task to print its pid")[0])

    first.kill()
    wait_until(lambda: gone(pid), 5, "the task to die with its agent (parent-death signal)")
    _, second_id = start_agent(live, tmp_path, agents, api, "rescue-node")
    done = api.wait_status(task_id, "succeeded", timeout=30)
    assert done["worker_id"] == second_id and done["attempts"] == 2
    assert done["attempt_history"][0]["end_reason"] == "worker_lost"
    assert api.worker("doomed-node")["status"] == "offline"  # type: ignore[index]


def test_agents_get_only_the_tasks_that_fit_them(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess],
                                                 api: Api) -> None:
    fake = json.dumps([{"name": "A100", "memory_gb": 80}, {"name": "A100", "memory_gb": 80}])
    _, cpu_id = start_agent(live, tmp_path, agents, api, "cpu-node", "--group", "cpu", "--slots", "2",
                            env={"AIDD_FAKE_GPUS": "[]"})  # no GPUs, also on a host that has real ones
    _, gpu_id = start_agent(live, tmp_path, agents, api, "gpu-node", "--group", "gpu", "--label", "a100",
                            "--slots", "2", env={"AIDD_FAKE_GPUS": fake})
    show = {"command": 'echo "cuda=[${CUDA_VISIBLE_DEVICES-unset}]"', "shell": True}
    cpu_tasks = [api.submit(group="cpu", input_params=show) for _ in range(2)]
    gpu_task = api.submit(group="gpu", labels=["a100"], resources={"gpu": 1}, input_params=show)
    two_gpus = api.submit(group="gpu", resources={"gpu": 2}, input_params=show)
    wrong_label = api.submit(group="gpu", labels=["h100"], input_params=show)
    no_gpus = api.submit(group="cpu", resources={"gpu": 1}, input_params=show)

    for task_id in cpu_tasks:
        done = api.wait_status(task_id, "succeeded")
        assert done["worker_id"] == cpu_id and api.logs(task_id) == ["cuda=[unset]"]  # no GPUs here: env untouched
    for task_id, count in ((gpu_task, 1), (two_gpus, 2)):
        done = api.wait_status(task_id, "succeeded")
        assert done["worker_id"] == gpu_id and len(done["gpus"]) == count
        assert f"cuda=[{','.join(map(str, done['gpus']))}]" in api.logs(task_id)
    time.sleep(1.0)
    assert api.task(wrong_label)["status"] == "pending" and api.task(no_gpus)["status"] == "pending"
    assert api.task(wrong_label)["pending_reason"] == {
        "code": "no_labels", "message": "no worker in group `gpu` serving `admet` has the label `h100`"}
    assert api.task(no_gpus)["pending_reason"] == {"code": "too_big",
                                                   "message": "no worker is big enough: none has 1 GPU"}
    gpu_worker = api.worker("gpu-node")
    assert gpu_worker is not None
    assert [g["name"] for g in gpu_worker["gpus"]] == ["A100", "A100"] and "gpu" in gpu_worker["labels"]
    assert len(gpu_worker["metrics"]["gpus"]) == 2


def test_a_gpu_task_waits_for_the_busy_gpu_and_says_so(live: BackgroundServer, tmp_path: Path,
                                                      agents: list[AgentProcess], api: Api) -> None:
    """One fake GPU held by a long task: the next one-GPU task waits with `busy`, a two-GPU task with `too_big`,
    and once the GPU is free the waiting one runs."""
    fake = json.dumps([{"name": "A100", "memory_gb": 80}])
    start_agent(live, tmp_path, agents, api, "one-gpu", "--group", "gpu1", "--slots", "4",
                env={"AIDD_FAKE_GPUS": fake})
    holder = api.submit(group="gpu1", resources={"gpu": 1}, input_params={"argv": ["sleep", "4"]})
    api.wait_status(holder, "running")
    waiting = api.submit(group="gpu1", resources={"gpu": 1}, input_params={"argv": ["true"]})
    two = api.submit(group="gpu1", resources={"gpu": 2}, input_params={"argv": ["true"]})
    assert wait_until(lambda: (r := api.task(waiting)["pending_reason"]) and r["code"] == "busy" and r, 10,
                    "the busy reason")["message"] == "the 1 fitting worker is busy"
    assert api.task(two)["pending_reason"]["code"] == "too_big"
    assert api.wait_status(waiting, "succeeded", timeout=30)["attempts"] == 1


def test_a_flooding_task_log_says_how_many_lines_the_cap_dropped(settings: Settings, clean_db: None,
                                                                 redis: SyncRedis, tmp_path: Path) -> None:
    """A real agent streams 5 000 lines into a cap of 100: the stored log is a note with the count, then the
    last 100 lines."""
    server = BackgroundServer(settings.model_copy(update={**FAST, "log_max_lines_per_attempt": 100}),
                              timers=True).start()
    agent = AgentProcess(server.url, tmp_path, "flooder")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http)
            task_id = api.submit(input_params={"argv": [sys.executable, "-c",
                                                        "for i in range(5000): print(f'line {i}')"]})
            api.wait_status(task_id, "succeeded", timeout=30)
            lines = api.logs(task_id)
    finally:
        agent.stop()
        server.stop()
    assert lines[0] == "… 4 900 lines dropped …"
    assert lines[1:] == [f"line {i}" for i in range(4900, 5000)]


def test_drain_stops_new_leases_until_resume(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess],
                                            api: Api) -> None:
    agent, worker_id = start_agent(live, tmp_path, agents, api, "drain-node")
    api.command(worker_id, "drain")
    wait_until(lambda: not api.http.get(f"/api/v1/workers/{worker_id}/commands").json()["items"], 10,
             "the agent to acknowledge drain")
    task_id = api.submit(input_params={"argv": ["true"]})
    time.sleep(2.0)
    assert api.task(task_id)["status"] == "pending"

    api.command(worker_id, "resume")
    assert api.wait_status(task_id, "succeeded")["worker_id"] == worker_id

    api.command(worker_id, "shutdown")  # graceful, like SIGTERM
    assert agent.proc.wait(20) == 0
    assert api.worker("drain-node")["status"] == "offline"  # type: ignore[index]


def test_no_heartbeat_brings_a_stopped_agent_back_online(live: BackgroundServer, tmp_path: Path,
                                                       agents: list[AgentProcess], api: Api) -> None:
    """A heartbeat still on the wire when the agent deregisters would mark the worker online again: with beats
    every 10 ms most stops would land on one, so the agent must stop its beats before it leaves."""
    for i in range(4):
        agent, _ = start_agent(live, tmp_path, agents, api, f"busy-beat-{i}", "--heartbeat-interval", "0.01")
        time.sleep(0.3)
        assert agent.stop() == 0
        assert api.worker(f"busy-beat-{i}")["status"] == "offline"  # type: ignore[index]


def test_sigterm_finishes_short_tasks_and_hands_back_long_ones(live: BackgroundServer, tmp_path: Path,
                                                              agents: list[AgentProcess], api: Api) -> None:
    agent, worker_id = start_agent(live, tmp_path, agents, api, "leaving-node", "--slots", "2", "--grace", "2")
    short = api.submit(input_params={"argv": ["sh", "-c", "sleep 1; echo finished"]})
    long = api.submit(input_params={"command": SPAWNS_CHILD, "shell": True})
    pid = child_pid(api, long)
    api.wait_status(short, "running")

    assert agent.stop(signal.SIGTERM) == 0
    assert api.task(short)["status"] == "succeeded"
    handed_back = api.task(long)
    assert handed_back["status"] == "pending" and handed_back["attempt_history"][0]["end_reason"] == "requeued"
    assert gone(pid)
    assert api.worker("leaving-node")["status"] == "offline"  # type: ignore[index]
    assert "deregistered" in agent.output and "Traceback" not in agent.output
    assert worker_id


def test_agent_fences_only_exclusive_tasks_when_the_coordinator_is_gone(settings: Settings, clean_db: None,
                                                                       redis: SyncRedis, tmp_path: Path) -> None:
    """With no coordinator answering, the agent stops an exclusive task before the coordinator's 3 s timeout could
    hand it to another host, and keeps the other task running (its disconnect grace)."""
    server = BackgroundServer(settings.model_copy(update=FAST), timers=True).start()
    agent = AgentProcess(server.url, tmp_path, "lonely-node", "--slots", "2")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http)
            exclusive = api.submit(input_params={"command": SPAWNS_CHILD, "shell": True}, exclusive=True)
            plain = api.submit(input_params={"command": SPAWNS_CHILD, "shell": True})
            exclusive_pid, plain_pid = child_pid(api, exclusive), child_pid(api, plain)
        server.stop()
        wait_until(lambda: gone(exclusive_pid), 8, "the agent to kill its exclusive task after losing the coordinator")
        wait_until(lambda: "stopping 1 exclusive task(s)" in agent.output, 5, "the agent to say why")
        time.sleep(1.0)
        assert not gone(plain_pid), "a task that is not exclusive must outlive a coordinator outage"
    finally:
        agent.stop(signal.SIGKILL)
        print(agent.output[-4000:])


def test_running_task_and_its_result_survive_a_coordinator_restart(settings: Settings, clean_db: None,
                                                                    redis: SyncRedis, tmp_path: Path) -> None:
    """The coordinator is away for twice its heartbeat timeout while a task runs and finishes: the task is not
    stopped, its result and log wait in the agent, and once a coordinator answers again it is accepted, on its
    first attempt."""
    fast = settings.model_copy(update=FAST)
    server = BackgroundServer(fast, timers=True).start()
    port = int(server.url.rsplit(":", 1)[1])
    agent = AgentProcess(server.url, tmp_path, "steady-node")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            task_id = Api(http).submit(input_params={"argv": ["sh", "-c", "echo started; sleep 3; echo finished"]})
            Api(http).wait_status(task_id, "running")
        server.stop()  # the task finishes while the coordinator is away; its report waits in the agent
        time.sleep(2 * FAST["heartbeat_timeout"])
        server = BackgroundServer(fast.model_copy(update={"port": port}), timers=True).start()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            api = Api(http)
            done = api.wait_status(task_id, "succeeded", timeout=30)
            assert done["attempts"] == 1 and "finished" in api.logs(task_id)
    finally:
        agent.stop(signal.SIGKILL)
        server.stop()
        print(agent.output[-4000:])


def test_command_line_errors_are_one_line(tmp_path: Path) -> None:
    import subprocess

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        import os

        environ = {**{k: v for k, v in os.environ.items() if not k.startswith("AIDD_")}, **(env or {})}
        return subprocess.run([sys.executable, "-m", "nodeagent.cli", *args], capture_output=True, text=True,
                              env=environ, cwd=Path(__file__).resolve().parent.parent, timeout=30)

    for args, env, needle in [(("--slots", "0"), None, "--slots"), ((), {"AIDD_SLOTS": "many"}, "AIDD_SLOTS"),
                              (("--url", "ftp://x"), None, "--url"), (("--group", "a b"), None, "--group"),
                              ((), {"AIDD_FAKE_GPUS": "[oops"}, "AIDD_FAKE_GPUS"),
                              (("--plugin-module", "no_such_module_xyz"), None, "no_such_module_xyz"),
                              (("--bogus",), None, "--bogus")]:
        result = run(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("aidd-agent:"), result.stderr
    listed = run("--list-task-types")
    assert {"shell", "noop", "sleep"} <= set(listed.stdout.split())


def test_unreachable_coordinator_is_retried_not_a_traceback(tmp_path: Path) -> None:
    agent = AgentProcess("http://127.0.0.1:9", tmp_path, "patient-node")
    wait_until(lambda: agent.output.count("cannot reach the coordinator") >= 2, 15, "two retries")
    assert agent.stop(signal.SIGTERM, timeout=10) == 0
    assert "Traceback" not in agent.output


def test_agent_registers_again_when_the_coordinator_forgot_it(live: BackgroundServer, tmp_path: Path,
                                                              agents: list[AgentProcess], api: Api) -> None:
    _, old_id = start_agent(live, tmp_path, agents, api, "forgotten-node")

    async def forget() -> None:  # as if the coordinator's record of this worker were lost
        from sqlalchemy import text

        core = live.coordinator.core
        async with core.engine.begin() as conn:
            await conn.execute(text("DELETE FROM workers WHERE id = :id"), {"id": old_id})
        await core.redis.delete(core.keys.worker(old_id))
        live.coordinator.workers._tokens.forget(None)

    live.call(forget)
    new = wait_until(lambda: (w := api.worker("forgotten-node")) and w["id"] != old_id and w, 15,
                   "the agent to register again")
    task_id = api.submit(input_params={"argv": ["true"]})
    assert api.wait_status(task_id, "succeeded")["worker_id"] == new["id"]


def test_input_files_in_and_outputs_out(live: BackgroundServer, tmp_path: Path, agents: list[AgentProcess],
                                        api: Api) -> None:
    start_agent(live, tmp_path, agents, api, "files-node")
    task = {"service": "docking", "task_type": "shell", "outputs": ["*.sdf", "logs/*.txt"],
            "input_params": {"command": "mkdir -p logs; tr a-z A-Z < data/ligands.smi > poses.sdf; "
                                        "wc -l < data/ligands.smi > logs/count.txt; echo scratch > scratch.tmp",
                             "shell": True}}
    response = api.http.post("/api/v1/tasks", data={"task": json.dumps(task)},
                             files=[("files", ("data/ligands.smi", b"cco\nc1ccccc1\n"))])
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]

    api.wait_status(task_id, "succeeded")
    listing = api.http.get(f"/api/v1/tasks/{task_id}/files").json()
    outputs = {f["name"]: f["url"] for f in listing["attempts"][0]["outputs"]}
    assert sorted(outputs) == ["logs/count.txt", "poses.sdf"]  # not the input, not scratch.tmp
    assert httpx.get(outputs["poses.sdf"]).content == b"CCO\nC1CCCCC1\n"
    assert httpx.get(outputs["logs/count.txt"]).text.strip() == "2"


@pytest.fixture(scope="module")
def real_gpus() -> list[GpuInfo]:
    """The GPUs the agent's own NVML probe sees here; the real-GPU tests are skipped where there are none."""
    gpus = NvmlProbe().inventory()
    if not gpus:
        pytest.skip("no NVIDIA GPU and driver here (NVML sees none)")
    return gpus


def test_real_nvml_probe_reads_every_gpu(real_gpus: list[GpuInfo]) -> None:
    probe = NvmlProbe()
    usage = probe.usage()
    assert [u["index"] for u in usage] == [g.index for g in real_gpus]
    for gpu, now in zip(real_gpus, usage, strict=True):
        assert gpu.name not in ("", "GPU") and gpu.uuid.startswith("GPU-") and gpu.memory_gb > 1
        assert now["memory_total_gb"] == pytest.approx(gpu.memory_gb, abs=0.01)
        assert 0 <= now["utilization"] <= 100 and 0 <= now["memory_used_gb"] <= now["memory_total_gb"]
        assert now["temperature"] is not None and 0 < now["temperature"] < 120
    assert all(p.index in {g.index for g in real_gpus} for p in probe.processes())


def test_one_gpu_tasks_never_share_a_real_gpu(real_gpus: list[GpuInfo], live: BackgroundServer, tmp_path: Path,
                                              agents: list[AgentProcess], api: Api) -> None:
    """n + 1 one-GPU tasks on n GPUs: each is told its GPU, and no two ever run on the same one at once."""
    count = len(real_gpus)
    _, worker_id = start_agent(live, tmp_path, agents, api, "real-gpu-node", "--group", "gpu",
                               "--slots", str(count + 2))
    worker = api.worker("real-gpu-node")
    assert worker is not None and "gpu" in worker["labels"]
    assert [g["name"] for g in worker["gpus"]] == [g.name for g in real_gpus]
    script = ("import os, time; print('start', os.environ.get('CUDA_VISIBLE_DEVICES'), time.time(), flush=True); "
              "time.sleep(1.5); print('end', time.time())")
    task_ids = [api.submit(group="gpu", resources={"gpu": 1}, input_params={"argv": [sys.executable, "-c", script]})
                for _ in range(count + 1)]
    too_big = api.submit(group="gpu", resources={"gpu": count + 1}, input_params={"argv": ["true"]})

    spans: dict[str, list[tuple[float, float]]] = {}
    for task_id in task_ids:
        done = api.wait_status(task_id, "succeeded", timeout=60)
        assert done["worker_id"] == worker_id and len(done["gpus"]) == 1
        (_, cuda, start), (_, end) = (line.split() for line in api.logs(task_id))
        assert cuda == str(done["gpus"][0])
        spans.setdefault(cuda, []).append((float(start), float(end)))
    for cuda, runs in spans.items():
        runs.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs)), f"two tasks shared GPU {cuda}"
    assert api.task(too_big)["status"] == "pending"
    beat = api.worker("real-gpu-node")["metrics"]  # type: ignore[index]
    assert [g["index"] for g in beat["gpus"]] == [g.index for g in real_gpus]


def test_a_cuda_task_sees_only_its_gpu_and_its_memory_is_measured(real_gpus: list[GpuInfo], live: BackgroundServer,
                                                                   tmp_path: Path, agents: list[AgentProcess],
                                                                   api: Api) -> None:
    """A PyTorch task holding 2 GiB: CUDA shows it one device, the heartbeats attribute the memory to it."""
    pytest.importorskip("torch")
    start_agent(live, tmp_path, agents, api, "cuda-node", "--group", "gpu")
    script = ("import time, torch; x = torch.empty(2 * 1024**3, dtype=torch.uint8, device='cuda'); "
              "print('devices', torch.cuda.device_count(), flush=True); time.sleep(6)")
    task_id = api.submit(group="gpu", resources={"gpu": 1}, input_params={"argv": [sys.executable, "-c", script]},
                         timeout_s=120)

    def held() -> float:
        beat = (api.worker("cuda-node") or {}).get("metrics", {})
        return max((t.get("gpu_memory_gb") or 0.0 for t in beat.get("tasks", []) if t["task_id"] == task_id),
                   default=0.0)

    assert wait_until(lambda: held() >= 2.0, 60, "the heartbeat to attribute 2 GiB of GPU memory to the task")
    done = api.wait_status(task_id, "succeeded", timeout=60)
    assert api.logs(task_id) == ["devices 1"] and len(done["gpus"]) == 1
