"""A fixed picture of a busy cluster, written straight into PostgreSQL, for snapshot tests and screenshots.

Every id is derived from a name and every time is an offset before `anchor`; shown with a console whose
clock is fixed at `anchor`, the screens are identical from run to run. Offsets sit half-way between
minutes, so figures the coordinator computes with its own clock (oldest wait, per-minute throughput) do
not change within the seconds a test takes. Start the API (or rebuild its Redis index) after writing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from console.demo.workload import FAILURES, MOLECULES
from coordinator.models import Attempt, Batch, PendingReasonChange, Service, Task, TaskLog, Worker
from coordinator.pending import Shape
from coordinator.reasonhistory import shape_key
from coordinator.workers import hash_token

SERVICES = [{"name": "docking", "paused": False, "max_running": 8, "description": "AutoDock Vina"},
            {"name": "inference", "paused": True, "max_running": None,
             "description": "REINVENT; paused for a model update"}]
"""The service registry of the picture: docking limited to 8 running, inference paused."""
NAMESPACE = uuid.UUID("6f1d6f8e-2b1e-4c1a-9a57-0d7f3e4a8b21")


def fixed_id(kind: str, n: int | str) -> uuid.UUID:
    """A stable id for the n-th thing of a kind."""
    return uuid.uuid5(NAMESPACE, f"{kind}/{n}")


@dataclass(frozen=True)
class FixedState:
    """Ids of the things tests and screenshots point at."""

    anchor: datetime
    running_task: uuid.UUID
    """A running task with a log (the task detail screenshot)."""
    failed_task: uuid.UUID
    hostile_task: uuid.UUID
    """A task whose name holds markup and a terminal escape (must show as plain text)."""
    tasks: int
    idle_gpu_task: uuid.UUID
    """A running docking task whose GPU has sat idle for 7 minutes (flagged)."""


GPU_HOSTS: list[tuple[str, str, float, list[tuple[float, float, float]], str]] = [
    # hostname, GPU model, GPU memory, per GPU (utilisation %, memory used GB, temperature °C), status
    ("demo-gpu-01", "NVIDIA A100-SXM4-80GB", 80.0, [(97, 61, 71), (93, 58, 69), (88, 47, 66), (3, 0.5, 35)], "online"),
    ("demo-gpu-02", "NVIDIA A100-PCIE-40GB", 40.0, [(2, 31, 41), (0, 0.4, 34)], "draining"),
    ("demo-gpu-03", "NVIDIA H100 80GB HBM3", 80.0, [(99, 72, 76), (98, 70, 75), (62, 24, 58), (61, 23, 57)], "online"),
]
CPU_HOSTS: list[tuple[str, int, float, float, float, str, float]] = [
    # hostname, cores, memory GB, CPU %, memory used GB, status, heartbeat seconds ago
    ("demo-cpu-01", 64, 256.0, 80.2, 96.0, "online", 3.0),
    ("demo-cpu-02", 32, 128.0, 30.5, 22.0, "online", 7.0),
    ("demo-cpu-03", 16, 64.0, 0.0, 0.0, "offline", 7230.0),
]


class _Writer:
    """Builds the rows; `at(s)` is `s` seconds before the anchor."""

    def __init__(self, anchor: datetime) -> None:
        self.anchor = anchor
        self.workers: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.reasons: list[dict[str, Any]] = []
        self.n = 0

    def at(self, seconds_ago: float) -> datetime:
        return self.anchor - timedelta(seconds=seconds_ago)

    def worker(self, hostname: str, status: str, cores: int, memory: float, gpus: list[dict[str, Any]],
               metrics: dict[str, Any], slots: int, groups: list[str], services: list[str], labels: list[str],
               beat_ago: float) -> uuid.UUID:
        wid = fixed_id("worker", hostname)
        self.workers.append({
            "id": wid, "hostname": hostname, "token_hash": hash_token(f"token-{hostname}"), "services": services,
            "groups": groups, "labels": labels, "cpu_cores": cores, "memory_gb": memory, "gpus": gpus,
            "slots": slots, "status": status, "metrics": metrics, "agent_version": "demo",
            "registered_at": self.at(86400), "last_heartbeat_at": self.at(beat_ago)})
        return wid

    def task(self, service: str, task_type: str, name: str, status: str, created_ago: float, *,
             params: dict[str, Any] | None = None, priority: int = 2, group: str = "default",
             batch: uuid.UUID | None = None, worker: uuid.UUID | None = None, started_ago: float | None = None,
             finished_ago: float | None = None, gpu: float = 0.0, gpus: list[int] | None = None,
             progress: float | None = None, error: str | None = None, reason: str | None = None,
             result: Any = None, attempts: int | None = None, max_retries: int = 3) -> uuid.UUID:
        self.n += 1
        tid = fixed_id("task", self.n)
        tries = attempts if attempts is not None else (0 if status == "pending" else 1)
        attempt_ids = [fixed_id("attempt", f"{self.n}/{i}") for i in range(1, tries + 1)]
        self.tasks.append({
            "id": tid, "service": service, "task_type": task_type, "name": name, "input_params": params or {},
            "priority": priority, "group": group, "labels": [], "cpu": 1.0, "memory_gb": 1.0, "gpu": gpu,
            "gpu_memory_gb": 0.0, "max_retries": max_retries, "timeout_s": 900,
            "retry_on": ["error", "timeout", "worker_lost"], "input_files": [], "outputs": [], "batch_id": batch,
            "submitted_by": "local", "status": status, "attempt_id": attempt_ids[-1] if attempt_ids else None,
            "attempts": tries, "retry_count": max(0, tries - 1), "worker_losses": 0, "worker_id": worker,
            "gpus": gpus or [], "progress": progress, "result": result, "error": error,
            "end_reason": reason or ("succeeded" if status == "succeeded" else None), "available_at": None,
            "created_at": self.at(created_ago), "updated_at": self.at(finished_ago or started_ago or created_ago),
            "started_at": self.at(started_ago) if started_ago is not None else None,
            "finished_at": self.at(finished_ago) if finished_ago is not None else None})
        for i, attempt in enumerate(attempt_ids, 1):
            last = i == len(attempt_ids)
            begun = (started_ago if started_ago is not None else created_ago - 5) + (len(attempt_ids) - i) * 90
            ended = finished_ago if last else begun - 60
            self.attempts.append({
                "id": attempt, "task_id": tid, "number": i, "worker_id": worker, "gpus": gpus or [],
                "leased_at": self.at(begun), "started_at": self.at(begun - 1),
                "ended_at": self.at(ended) if ended is not None and (status != "running" or not last) else None,
                "end_reason": (reason or ("succeeded" if status == "succeeded" else None)) if last else "error",
                "exit_code": (0 if status == "succeeded" else 1 if status == "failed" else None) if last else 1,
                "error": error})
        return tid

    def reason(self, shape: Shape, code: str, message: str, seconds_ago: float) -> None:
        """The leader's record that the shape's pending reason became `code` then."""
        self.reasons.append({"shape_key": shape_key(shape), "code": code, "message": message,
                             "at": self.at(seconds_ago)})

    def log(self, task: uuid.UUID, lines: list[tuple[str, str]]) -> None:
        attempt = next(t["attempt_id"] for t in self.tasks if t["id"] == task)
        for i, (stream, line) in enumerate(lines):
            self.logs.append({"task_id": task, "attempt_id": attempt, "stream": stream, "line": line,
                              "ts": self.at(120 - i * 8)})


def _workers(w: _Writer) -> dict[str, uuid.UUID]:
    ids: dict[str, uuid.UUID] = {}
    for hostname, model, memory, gpus, status in GPU_HOSTS:
        inventory = [{"index": i, "name": model, "uuid": f"GPU-{hostname}-{i}", "memory_gb": memory}
                     for i in range(len(gpus))]
        live = [{"index": i, "utilization": u, "memory_used_gb": m, "memory_total_gb": memory, "temperature": t}
                for i, (u, m, t) in enumerate(gpus)]
        cores = 96 if hostname.endswith("03") else 64 if hostname.endswith("01") else 32
        percent = 35.0 + 10 * len(gpus) / 4
        metrics = {"cpu_percent": percent, "used_cpu": round(cores * percent / 100, 1),
                   "used_memory_gb": 40.0 * len(gpus), "gpus": live}
        ids[hostname] = w.worker(hostname, status, cores, 512.0, inventory, metrics, 8 if len(gpus) > 2 else 4,
                                 ["gpu"], ["docking", "inference"], ["gpu", model.split()[1].lower()],
                                 1.0 + len(ids))
    for hostname, cores, memory, cpu, used, status, beat in CPU_HOSTS:
        metrics = ({"cpu_percent": cpu, "used_cpu": round(cores * cpu / 100, 1), "used_memory_gb": used}
                   if status != "offline" else {})
        ids[hostname] = w.worker(hostname, status, cores, memory, [], metrics, cores // 4, ["default"], ["admet"],
                                 [], beat)
    return ids


def _admet_batch(w: _Writer, hosts: dict[str, uuid.UUID]) -> None:
    batch = fixed_id("batch", "admet")
    w.batches.append({"id": batch, "name": "ADMET screen, kinase-focused library", "total": 120,
                      "created_at": w.at(2430)})
    minutes = [1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 5, 6, 7, 7, 8, 9, 9, 10, 11, 12, 12, 13, 14, 15, 16,
               17, 18, 19, 20, 22, 24, 26, 28]
    for i in range(120):
        name, smiles = MOLECULES[i % len(MOLECULES)]
        params = {"smiles": smiles, "compound": f"{name}-{i // len(MOLECULES) + 1:03d}"}
        title = f"QikProp {name}-{i // len(MOLECULES) + 1:03d}"
        created = 2430 - i * 0.5
        if i < 96:
            done = minutes[i % len(minutes)] * 60 + 30
            w.task("admet", "qikprop", title, "succeeded", created, params=params, batch=batch,
                   worker=hosts["demo-cpu-01" if i % 3 else "demo-cpu-02"], started_ago=done + 4,
                   finished_ago=done, result={"QPlogPo/w": round(1.5 + (i % 9) * 0.4, 2), "#metab": i % 6})
        elif i < 100:
            error = FAILURES["valence"][0]
            w.task("admet", "qikprop", title, "failed", created, params=params, batch=batch,
                   worker=hosts["demo-cpu-02"], started_ago=600 + i, finished_ago=570 + i, error=error,
                   reason="permanent")
        elif i < 110:
            host = "demo-cpu-01" if i < 107 else "demo-cpu-02"
            w.task("admet", "qikprop", title, "running", created, params=params, batch=batch, worker=hosts[host],
                   started_ago=2 + (i - 100), progress=round(0.1 * (i - 99), 2))
        else:
            w.task("admet", "qikprop", title, "pending", created, params=params, batch=batch)


def _docking_batch(w: _Writer, hosts: dict[str, uuid.UUID]) -> uuid.UUID:
    """The docking batch; returns its task whose GPU sits idle."""
    batch = fixed_id("batch", "docking")
    idle = None
    w.batches.append({"id": batch, "name": "docking EGFR (1M17)", "total": 28, "created_at": w.at(1530)})
    placements = [("demo-gpu-01", 0), ("demo-gpu-01", 1), ("demo-gpu-01", 2), ("demo-gpu-03", 0),
                  ("demo-gpu-03", 1), ("demo-gpu-02", 0)]
    for i in range(28):
        name, smiles = MOLECULES[i % 14]
        params = {"receptor": "1M17.pdbqt", "ligand": name, "smiles": smiles, "exhaustiveness": 16}
        title = f"Vina EGFR · {name}"
        created = 1530 - i
        common: dict[str, Any] = {"params": params, "batch": batch, "priority": 3, "group": "gpu", "gpu": 1.0}
        if i < 12:
            done = (2 + i * 2) * 60 + 30
            w.task("docking", "vina", title, "succeeded", created, worker=hosts["demo-gpu-01"], gpus=[i % 3],
                   started_ago=done + 40, finished_ago=done, result={"best_affinity_kcal_mol": -7.5 - i * 0.2},
                   **common)
        elif i < 14:
            w.task("docking", "vina", title, "timeout", created, worker=hosts["demo-gpu-03"], gpus=[0],
                   started_ago=1290, finished_ago=390 + i, error="timed out after 900 s", reason="timeout",
                   **common)
        elif i < 20:
            host, gpu = placements[i - 14]
            stuck = host == "demo-gpu-02"  # its GPU has sat idle for 7 minutes: flagged
            tid = w.task("docking", "vina", title, "running", created, worker=hosts[host], gpus=[gpu],
                         started_ago=450 if stuck else 20 + (i - 14) * 7, progress=round(0.15 * (i - 13), 2),
                         **common)
            idle = tid if stuck else idle
        else:
            w.task("docking", "vina", title, "pending", created, **common)
    assert idle is not None
    return idle


def _inference_batch(w: _Writer, hosts: dict[str, uuid.UUID]) -> None:
    batch = fixed_id("batch", "inference")
    w.batches.append({"id": batch, "name": "REINVENT scaffold sampling", "total": 12, "created_at": w.at(330)})
    for i in range(12):
        params = {"scaffold": MOLECULES[i][1], "samples": 512, "seed": 1000 + i}
        title = f"REINVENT sampling seed {1000 + i}"
        common: dict[str, Any] = {"params": params, "batch": batch, "priority": 1, "group": "gpu", "gpu": 0.5}
        if i < 2:
            w.task("inference", "reinvent", title, "running", 330 - i, worker=hosts["demo-gpu-03"], gpus=[2 + i],
                   started_ago=95 - i * 10, progress=0.4 + 0.2 * i, **common)
        else:
            w.task("inference", "reinvent", title, "pending", 330 - i, **common)


def _singles(w: _Writer, hosts: dict[str, uuid.UUID]) -> dict[str, uuid.UUID]:
    ids: dict[str, uuid.UUID] = {}
    w.task("admet", "qikprop", "ADMET prediction", "pending", 150,
           params={"smiles": ["CCO", "CC(=O)OC1=CC=CC=C1C(=O)O"]})
    ids["running"] = w.task(
        "admet", "qikprop", "urgent: hERG liability check, lead series B", "running", 190, priority=3,
        params={"smiles": MOLECULES[4][1], "model": "herg-v3", "conformers": 32}, worker=hosts["demo-cpu-01"],
        started_ago=124, progress=0.62)
    admet = Shape("admet", "default", memory_gb=1.0)  # it waited for a CPU worker, leased at 124 s ago
    busy = "all 2 fitting workers are busy"
    w.reason(admet, "busy", busy, 250)
    w.reason(admet, "ready", "starts at the next lease of a worker with room", 126.5)
    w.reason(admet, "busy", busy, 122.5)
    w.log(ids["running"], [
        ("stdout", "QikProp 7.2 (herg-v3) starting on demo-cpu-01"),
        ("stdout", "input: 1 molecule, 32 conformers"),
        ("stdout", "conformer search: 8/32"), ("stdout", "conformer search: 16/32"),
        ("stderr", "warning: stereo centre at atom 12 unassigned; both enantiomers scored"),
        ("stdout", "conformer search: 24/32"), ("stdout", "conformer search: 32/32 \x1b[32mOK\x1b[0m"),
        ("stdout", "hERG pIC50 model: scoring conformers"),
        ("stdout", "  best pose pIC50 5.83 (threshold 6.0)"),
        ("stdout", "descriptors: QPlogHERG -5.91, QPlogPo/w 4.12, QPlogS -5.40"),
        ("stdout", "writing results to herg-lead-B.json"),
    ])
    ids["failed"] = w.task(
        "docking", "vina", "Vina docking 8FJX (missing receptor)", "failed", 900, priority=3, group="gpu", gpu=1.0,
        params={"receptor": "rec_8FJX.pdbqt", "smiles": MOLECULES[5][1]}, worker=hosts["demo-gpu-01"], gpus=[3],
        started_ago=700, finished_ago=690, error=FAILURES["receptor"][0], reason="error", attempts=2,
        max_retries=1)
    w.task("inference", "reinvent", "REINVENT 4096 samples (too big)", "failed", 1250, priority=1, group="gpu",
           gpu=0.5, params={"samples": 4096}, worker=hosts["demo-gpu-02"], gpus=[1], started_ago=1200,
           finished_ago=1110, error=FAILURES["oom"][0], reason="error", max_retries=0)
    w.task("admet", "qikprop", "QikProp caffeine (duplicate)", "cancelled", 2000, reason="cancelled",
           finished_ago=1900, attempts=0)
    ids["hostile"] = w.task("admet", "qikprop", "[bold red]not markup[/] \x1b[31mescaped\x1b[0m name", "pending",
                            95, params={"smiles": "C[C@H](N)C(=O)O", "note": "[link=http://x]no link[/link]"})
    return ids


async def write_fixed_state(engine: AsyncEngine, anchor: datetime) -> FixedState:
    """Write the workers, batches, tasks, attempts, logs, service registry and past pending reasons of the fixed
    picture (into an empty record)."""
    w = _Writer(anchor)
    hosts = _workers(w)
    _admet_batch(w, hosts)
    idle = _docking_batch(w, hosts)
    _inference_batch(w, hosts)
    ids = _singles(w, hosts)
    async with engine.begin() as conn:
        await conn.execute(insert(Worker), w.workers)
        await conn.execute(insert(Batch), w.batches)
        for task in w.tasks:  # one by one keeps `seq` in this order
            await conn.execute(insert(Task), [task])
        await conn.execute(insert(Attempt), w.attempts)
        await conn.execute(insert(TaskLog), w.logs)
        await conn.execute(insert(Service), SERVICES)
        await conn.execute(insert(PendingReasonChange), w.reasons)
    return FixedState(anchor, ids["running"], ids["failed"], ids["hostile"], len(w.tasks), idle)
