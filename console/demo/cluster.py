"""`aidd --demo`: seed the workload through the API and simulate a few GPU hosts (hostnames demo-*).

The simulated workers use the real agent API (register, heartbeat with fake GPU telemetry, lease, report
progress / logs / results), so every pane of the console moves exactly as it would with real agents.
They run on a thread of their own with their own event loop and leave (offline) when the console stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aiddclient.client import ApiError, CoordinatorClient
from aiddclient.submitfile import submit_in_chunks
from aiddwire import CommandKind, EndReason, EventKind, gpu_share
from console.demo import workload

log = logging.getLogger(__name__)

STEP_S = 1.0
HEARTBEAT_EVERY = 2
TRICKLE_EVERY_S = 8.0
TRICKLE_MAX_PENDING = 400


@dataclass(frozen=True)
class HostSpec:
    """A simulated host."""

    hostname: str
    groups: list[str]
    services: list[str]
    labels: list[str]
    cpu_cores: int
    memory_gb: float
    gpus: list[tuple[str, float]]
    slots: int


HOSTS = [
    HostSpec("demo-gpu-01", ["gpu"], ["docking", "inference"], ["gpu", "a100"], 64, 512,
             [("NVIDIA A100-SXM4-80GB", 80.0)] * 4, 8),
    HostSpec("demo-gpu-02", ["gpu"], ["docking", "inference"], ["gpu", "a100"], 32, 256,
             [("NVIDIA A100-PCIE-40GB", 40.0)] * 2, 4),
    HostSpec("demo-gpu-03", ["gpu"], ["docking", "inference"], ["gpu", "h100", "high-mem"], 96, 1024,
             [("NVIDIA H100 80GB HBM3", 80.0)] * 4, 8),
    HostSpec("demo-cpu-01", ["cpu"], ["admet"], ["high-mem"], 64, 256, [], 16),
    HostSpec("demo-cpu-02", ["cpu"], ["admet"], [], 32, 128, [], 8),
]
"""The demo cluster: three GPU hosts for docking and inference, two CPU hosts for ADMET."""

DURATION_S = {"admet": (2.0, 6.0), "docking": (6.0, 15.0), "inference": (8.0, 20.0)}


@dataclass
class SimTask:
    """A leased task being "run" by a simulated worker."""

    lease: dict[str, Any]
    started: float
    duration: float
    steps: int = 0

    @property
    def task_id(self) -> str:
        return str(self.lease["task_id"])

    @property
    def resources(self) -> dict[str, Any]:
        return self.lease.get("resources") or {}

    @property
    def fail(self) -> str | None:
        value = (self.lease.get("input_params") or {}).get("fail")
        return str(value) if value else None


@dataclass
class DemoWorker:
    """One simulated host speaking the agent API."""

    spec: HostSpec
    http: httpx.AsyncClient
    rng: random.Random
    worker_id: str = ""
    token: str = ""
    status: str = "online"
    running: dict[str, SimTask] = field(default_factory=dict)
    ticks: int = 0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(f"/api/v1/workers/{self.worker_id}{path}", json=body, headers=self._headers())

    async def join(self, saved: dict[str, Any], agent_token: str | None) -> None:
        """Come back as the worker saved last time, or register anew."""
        if saved.get("id") and saved.get("token"):
            self.worker_id, self.token = saved["id"], saved["token"]
            # What it held when the console last stopped goes back to the queue; then it is online again.
            if (await self.http.delete(f"/api/v1/workers/{self.worker_id}", headers=self._headers())).is_success:
                if (await self._post("/heartbeat", self.telemetry())).status_code == 200:
                    return
        body = {"hostname": self.spec.hostname, "groups": self.spec.groups, "services": self.spec.services,
                "labels": self.spec.labels, "cpu_cores": self.spec.cpu_cores, "memory_gb": self.spec.memory_gb,
                "slots": self.spec.slots, "agent_version": "demo",
                "gpus": [{"index": i, "name": name, "uuid": f"GPU-demo-{self.spec.hostname}-{i}", "memory_gb": mem}
                         for i, (name, mem) in enumerate(self.spec.gpus)]}
        headers = {"Authorization": f"Bearer {agent_token}"} if agent_token else {}
        response = await self.http.post("/api/v1/workers/register", json=body, headers=headers)
        response.raise_for_status()
        self.worker_id, self.token = response.json()["id"], response.json()["token"]

    # -- one step ----------------------------------------------------------------------------------

    async def step(self) -> None:
        """Report on running tasks, lease new ones, heartbeat every other step."""
        self.ticks += 1
        await self._report()
        if self.ticks % HEARTBEAT_EVERY == 1:
            await self._heartbeat()
        if self.status == "online":
            await self._lease()

    def _gpu_load(self) -> list[float]:
        load = [0.0] * len(self.spec.gpus)
        for sim in self.running.values():
            held = sim.lease.get("gpus") or []
            for index in held:
                if 0 <= int(index) < len(load):
                    load[int(index)] += gpu_share(float(sim.resources.get("gpu") or 0), len(held))
        return load

    async def _lease(self) -> None:
        free_slots = self.spec.slots - len(self.running)
        if free_slots <= 0:
            return
        used_cpu = sum(float(s.resources.get("cpu") or 1) for s in self.running.values())
        used_mem = sum(float(s.resources.get("memory_gb") or 0) for s in self.running.values())
        gpus = [{"index": i, "free": max(0.0, 1.0 - load), "memory_gb": mem * max(0.0, 1.0 - load)}
                for i, ((_, mem), load) in enumerate(zip(self.spec.gpus, self._gpu_load(), strict=True))]
        body = {"max_tasks": min(free_slots, 4), "wait_s": 0, "cpu": max(0.0, self.spec.cpu_cores - used_cpu),
                "memory_gb": max(0.0, self.spec.memory_gb - used_mem), "gpus": gpus}
        response = await self._post("/lease", body)
        if response.status_code != 200:
            return
        now = time.monotonic()
        events = []
        for lease in response.json().get("tasks", []):
            low, high = DURATION_S.get(str(lease.get("service")), (3.0, 8.0))
            sim = SimTask(lease, now, self.rng.uniform(low, high))
            self.running[sim.task_id] = sim
            events.append({"task_id": sim.task_id, "attempt_id": lease["attempt_id"], "event": EventKind.STARTED})
        if events:
            await self._post("/reports", {"events": events})

    async def _report(self) -> None:
        now = time.monotonic()
        events: list[dict[str, Any]] = []
        finished: list[str] = []
        for sim in list(self.running.values()):
            sim.steps += 1
            fraction = min(1.0, (now - sim.started) / sim.duration)
            base = {"task_id": sim.task_id, "attempt_id": sim.lease["attempt_id"]}
            if sim.fail and fraction >= 0.4:
                error, reason = workload.FAILURES.get(sim.fail, ("simulated failure", EndReason.ERROR))
                events.append({**base, "event": EventKind.LOG, "lines": [{"stream": "stderr", "line": error}]})
                events.append({**base, "event": EventKind.FAILED, "error": error, "reason": reason, "exit_code": 1})
                finished.append(sim.task_id)
            elif fraction >= 1.0:
                events.append({**base, "event": EventKind.LOG, "lines": [{"stream": "stdout", "line": "done"}]})
                events.append({**base, "event": EventKind.SUCCEEDED, "result": self._result(sim)})
                finished.append(sim.task_id)
            else:
                events.append({**base, "event": EventKind.PROGRESS, "progress": round(fraction, 2),
                               "lines": [{"stream": "stdout", "line": self._log_line(sim, fraction)}]})
        for task_id in finished:
            self.running.pop(task_id, None)
        if not events:
            return
        response = await self._post("/reports", {"events": events})
        if response.status_code in (200, 409):
            for result in response.json().get("results", []):
                if result.get("status") == 409:
                    self.running.pop(str(result.get("task_id")), None)

    def _log_line(self, sim: SimTask, fraction: float) -> str:
        params = sim.lease.get("input_params") or {}
        service = sim.lease.get("service")
        if service == "docking":
            pose = min(9, 1 + int(fraction * 9))
            return f"vina: pose {pose}/9 affinity {self.rng.uniform(-10.5, -6.0):.1f} kcal/mol"
        if service == "inference":
            total = int(params.get("samples") or 512)
            return (f"sampled {int(fraction * total)}/{total} molecules, valid {self.rng.uniform(88, 97):.1f}%,"
                    f" unique {self.rng.uniform(80, 93):.1f}%")
        compound = params.get("compound") or "compound"
        return f"QikProp: {compound}: descriptors {min(4, 1 + int(fraction * 4))}/4"

    def _result(self, sim: SimTask) -> dict[str, Any]:
        service = sim.lease.get("service")
        if service == "docking":
            return {"best_affinity_kcal_mol": round(self.rng.uniform(-11.0, -6.5), 2), "poses": 9}
        if service == "inference":
            return {"valid": round(self.rng.uniform(0.88, 0.97), 3), "unique": round(self.rng.uniform(0.8, 0.93), 3)}
        return {"QPlogPo/w": round(self.rng.uniform(-1, 6), 2), "QPlogS": round(self.rng.uniform(-7, 0), 2),
                "QPPCaco": round(self.rng.uniform(20, 900), 1), "#metab": self.rng.randint(0, 7)}

    def telemetry(self) -> dict[str, Any]:
        """A heartbeat body with believable CPU, memory and per-GPU figures for what is running."""
        rng = self.rng
        used_cpu = sum(float(s.resources.get("cpu") or 1) for s in self.running.values()) * rng.uniform(0.85, 1.0)
        used_cpu = min(float(self.spec.cpu_cores), used_cpu + rng.uniform(0.2, 0.8))
        used_mem = 6 + sum(float(s.resources.get("memory_gb") or 0.5) for s in self.running.values())
        gpus = []
        for i, ((_, total), load) in enumerate(zip(self.spec.gpus, self._gpu_load(), strict=True)):
            util = min(100.0, load * rng.uniform(85, 99)) if load else rng.uniform(0, 2)
            gpus.append({"index": i, "utilization": round(util, 1),
                         "memory_used_gb": round(min(total, 0.5 + load * total * rng.uniform(0.4, 0.7)), 1),
                         "memory_total_gb": total, "temperature": round(33 + util * 0.45 + rng.uniform(-1, 1)),
                         "power_w": round(60 + util * 3.2)})
        return {"used_cpu": round(used_cpu, 1), "cpu_percent": round(used_cpu / self.spec.cpu_cores * 100, 1),
                "used_memory_gb": round(min(self.spec.memory_gb, used_mem), 1), "gpus": gpus,
                "current_tasks": list(self.running)}

    async def _heartbeat(self) -> None:
        response = await self._post("/heartbeat", self.telemetry())
        if response.status_code != 200:
            return
        answer = response.json()
        self.status = str(answer.get("status") or "online")
        for task_id in answer.get("stale_tasks") or []:
            self.running.pop(str(task_id), None)
        acked = []
        for command in answer.get("commands") or []:
            acked.append(command["id"])
            if command.get("command") == CommandKind.CANCEL_TASK:
                self.running.pop(str((command.get("args") or {}).get("task_id")), None)
        if acked:
            await self.http.delete(f"/api/v1/workers/{self.worker_id}/commands",
                                   params={"ids": ",".join(map(str, acked))}, headers=self._headers())

    async def leave(self) -> None:
        """Graceful stop: offline, with the tasks it held handed back to the queue."""
        await self.http.delete(f"/api/v1/workers/{self.worker_id}", headers=self._headers())


class DemoCluster:
    """The demo: a seeded workload and simulated workers, on a thread of their own."""

    def __init__(self, url: str, api_key: str | None = None, agent_token: str | None = None,
                 state_dir: Path | None = None, seed: int = 7) -> None:
        self.url, self.api_key, self.agent_token, self.state_dir = url, api_key, agent_token, state_dir
        self.rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="aidd-demo", daemon=True)

    def start(self) -> DemoCluster:
        """Start seeding and simulating in the background."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the simulated workers (they go offline) and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the demo cluster stopped")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with CoordinatorClient(self.url, self.api_key, timeout=30) as client, \
                httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            workers = [DemoWorker(spec, http, random.Random(self.rng.random())) for spec in HOSTS]
            if not await self._join(workers):
                return
            await self._seed(client)
            runners = [asyncio.create_task(self._run(w)) for w in workers]
            runners.append(asyncio.create_task(self._trickle(client)))
            await self._stop.wait()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
            await asyncio.gather(*(w.leave() for w in workers), return_exceptions=True)

    def _saved_path(self) -> Path | None:
        return self.state_dir / "demo-workers.json" if self.state_dir else None

    async def _join(self, workers: list[DemoWorker]) -> bool:
        path = self._saved_path()
        try:
            saved = json.loads(path.read_text()) if path and path.exists() else {}
        except (OSError, ValueError):
            saved = {}
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                for w in workers:
                    await w.join(saved.get(w.spec.hostname, {}), self.agent_token)
                break
            except httpx.HTTPError as exc:
                log.warning("demo workers cannot register yet: %s", exc)
                await self._sleep(2.0)
        else:
            return False
        if path is not None:
            path.write_text(json.dumps({w.spec.hostname: {"id": w.worker_id, "token": w.token} for w in workers}))
        return True

    async def _seed(self, client: CoordinatorClient) -> None:
        try:
            if any(b.name.startswith(workload.DEMO_PREFIX) for b in await client.batches(200)):
                return
            batches = [workload.admet_batch(300, self.rng), workload.docking_batch("EGFR", "1M17", 56),
                       workload.docking_batch("ABL1", "2HYY", 28), workload.inference_batch(24)]
            for name, template, inputs in batches:
                await submit_in_chunks(client, template, inputs, name=name)
            for task in workload.single_tasks():
                await client.submit(task)
        except ApiError as exc:
            log.warning("demo workload not fully seeded: %s", exc)

    async def _run(self, worker: DemoWorker) -> None:
        while True:
            try:
                await worker.step()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("demo worker %s: %s", worker.spec.hostname, exc)
            await asyncio.sleep(STEP_S)

    async def _trickle(self, client: CoordinatorClient) -> None:
        while True:
            await asyncio.sleep(TRICKLE_EVERY_S)
            try:
                counts = (await client.task_stats()).by_status
                if int(counts.get("pending", 0)) < TRICKLE_MAX_PENDING:
                    for task in workload.trickle(self.rng):
                        await client.submit(task)
            except ApiError as exc:
                log.warning("demo trickle: %s", exc)

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
