"""Real work through aidd next to the physical limit on the same cores: an ADMET-AI screen and Vina dockings.

For each workload the same function (`toolkit.admet.rows`, `toolkit.docking.rows`) runs three ways, each
timed from its start (so model loading and Vina's grid maps count everywhere, once per process):

- **single**: one process, chunk after chunk;
- **pool**: a `multiprocessing.Pool` of as many processes as cores, the models loaded once per worker;
- **aidd**: `aidd --serve` (embedded Redis and PostgreSQL) and one local agent with as many slots as cores;
  the batch is submitted over HTTP and timed until its last task has finished.

Target: aidd at least 0.95 times the pool's throughput. Where a difference goes is printed: the agent's slot use
(the tasks' own run time over slots times wall time), the wait before the first task started, and the tail
(the last task's end after the next-to-last slot went idle). `--gpu` runs the ADMET screen's aidd leg with
`--gpu 1` on a host with a GPU (molecules/s on the GPU next to the CPU pool). Needs the `chem` extra.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import multiprocessing
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.harness import free_port, python, python_env, spawn, wait_for

Chunk = dict[str, Any]


DOCKABLE = {"C", "N", "O", "S", "P", "F", "Cl", "Br", "I", "H"}
"""Elements Vina and Meeko type (a drug with arsenic or platinum is an error row, not a docking)."""


def _dockable(smiles: str) -> bool:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return mol is not None and all(a.GetSymbol() in DOCKABLE for a in mol.GetAtoms())


def drugs(count: int, max_mw: float | None = None) -> list[dict[str, str]]:
    """Approved drugs from ADMET-AI's DrugBank reference set (cycled when `count` is larger); with `max_mw`, the
    dockable ones lighter than that (docking time grows with a ligand's size and flexibility)."""
    spec = importlib.util.find_spec("admet_ai")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench.real_work needs the chem extra: pip install torch==2.13.0 'aidd[chem]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "data" / "drugbank_approved.csv"
    with path.open(newline="") as file:
        rows = [r for r in csv.DictReader(file)
                if max_mw is None or (float(r["molecular_weight"]) <= max_mw and _dockable(r["smiles"]))]
    return [{"smiles": rows[i % len(rows)]["smiles"], "name": f"{rows[i % len(rows)]['name']}#{i}"}
            for i in range(count)]


def chunks(molecules: list[dict[str, str]], size: int, extra: dict[str, Any]) -> list[Chunk]:
    """The molecules as task parameters, `size` to a chunk (as `aidd submit --chunk` makes them)."""
    parts = [molecules[s:s + size] for s in range(0, len(molecules), size)]
    return [{"smiles": [m["smiles"] for m in part], "names": [m["name"] for m in part], **extra} for part in parts]


def run_chunk(task_type: str, params: Chunk) -> int:
    """One chunk through the pack's own function (the same code the plugin runs); returns its molecules."""
    from nodeagent.plugins import TaskContext
    from toolkit.inputs import molecules

    context = TaskContext(work_dir=Path(tempfile.mkdtemp(prefix="aidd-bench-")), task={"resources": {"cpu": 1}})
    inputs = molecules(params)
    if task_type == "admet-ai":
        from toolkit import admet

        return len(admet.rows(inputs, context))
    from toolkit import docking

    return len(docking.rows(inputs, params, context))


def _run_admet(params: Chunk) -> int:
    return run_chunk("admet-ai", params)


def _run_vina(params: Chunk) -> int:
    return run_chunk("vina", params)


def _warm(task_type: str) -> None:
    """Pool initializer: load the models once per worker (ADMET-AI); Vina's maps come with the first chunk."""
    if task_type == "admet-ai":
        from toolkit import admet

        admet.model()


def single(task_type: str, work: list[Chunk]) -> float:
    start = time.perf_counter()
    for params in work:
        run_chunk(task_type, params)
    return time.perf_counter() - start


def pool(task_type: str, work: list[Chunk], processes: int) -> float:
    start = time.perf_counter()
    function = _run_admet if task_type == "admet-ai" else _run_vina
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_warm, initargs=(task_type,)) as workers:
        list(workers.imap_unordered(function, work, chunksize=1))
    return time.perf_counter() - start


class Aidd:
    """`aidd --serve` on embedded stores in a temporary state dir, and one agent."""

    def __init__(self, state: Path, slots: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = python_env(AIDD_STATE_DIR=str(state / "coordinator"))
        self.server = spawn("coordinator", python("-m", "aiddclient.cli", "--serve", "--port", str(self.port)), env,
                            state)
        wait_for(self._healthy, 120, "the coordinator", interval=0.2, children=[self.server])
        self.agent = spawn("agent", python("-m", "nodeagent.cli", "--url", self.url, "--slots", str(slots),
                                           "--work-dir", str(state / "work"), "--log-level", "warning"), env, state)
        wait_for(lambda: bool(httpx.get(f"{self.url}/api/v1/workers").json()["items"]), 60, "the agent",
                 interval=0.2, children=[self.agent, self.server])

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def run(self, task_type: str, service: str, work: list[Chunk], resources: dict[str, Any],
            outputs: list[str]) -> dict[str, Any]:
        """Submit the chunks as one batch; the wall time to its last task's end and where the time went."""
        with httpx.Client(base_url=self.url, timeout=60) as http:
            start = time.perf_counter()
            submitted = time.time()
            body = {"name": f"bench {task_type}", "tasks": [{"input_params": p} for p in work],
                    "defaults": {"service": service, "task_type": task_type, "resources": resources,
                                 "outputs": outputs, "timeout_s": 3600}}
            batch_id = http.post("/api/v1/tasks", json=body).raise_for_status().json()["batch_id"]

            def done() -> bool:
                counts = {s: http.get("/api/v1/tasks", params={"batch_id": batch_id, "status": s, "page_size": 1})
                          .json()["total"] for s in ("succeeded", "failed", "timeout")}
                if counts["failed"] or counts["timeout"]:
                    failed = http.get("/api/v1/tasks", params={"batch_id": batch_id, "status": "failed,timeout"})
                    errors = [t["error"] for t in failed.json()["items"]]
                    raise SystemExit(f"{task_type}: tasks failed: {counts}: {errors}")
                return counts["succeeded"] == len(work)
            wait_for(done, 3600, f"the {task_type} batch", interval=0.1, children=[self.agent, self.server])
            wall = time.perf_counter() - start
            tasks = http.get("/api/v1/tasks", params={"batch_id": batch_id, "page_size": 1000}).json()["items"]
        spans = sorted((datetime.fromisoformat(t["started_at"]).timestamp() - submitted,
                        datetime.fromisoformat(t["finished_at"]).timestamp() - submitted) for t in tasks)
        return {"wall_s": wall, "busy_s": sum(end - begin for begin, end in spans),
                "first_start_s": spans[0][0], "ends": sorted(end for _, end in spans),
                "devices": sorted({str(t["result"]["rows"][0].get("device", "cpu")) for t in tasks})}

    def stop(self) -> None:
        for child in (self.agent, self.server):
            child.stop()


def report(name: str, molecules: int, single_s: float | None, pool_s: float, ours: dict[str, Any],
           slots: int) -> dict[str, Any]:
    """Print one workload's figures and return them."""
    rate = {"pool": molecules / pool_s, "aidd": molecules / ours["wall_s"]}
    if single_s is not None:
        rate["single"] = molecules / single_s
    ends = ours["ends"]
    tail = ends[-1] - ends[-2] if len(ends) > 1 else 0.0
    figures = {"workload": name, "molecules": molecules, "slots": slots, "molecules_per_s": rate,
               "aidd_vs_pool": rate["aidd"] / rate["pool"], "slot_use": ours["busy_s"] / (slots * ours["wall_s"]),
               "first_start_s": ours["first_start_s"], "tail_s": tail, "aidd_devices": ours["devices"]}
    print(json.dumps(figures, indent=2), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--dockings", type=int, default=20)
    parser.add_argument("--exhaustiveness", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-single", action="store_true", help="skip the single-process runs (they take longest)")
    parser.add_argument("--only", choices=("admet", "vina"), help="one workload")
    parser.add_argument("--gpu", action="store_true", help="the ADMET screen through aidd with --gpu 1")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="aidd-real-work-") as state:
        ours = Aidd(Path(state), args.cores)
        try:
            if args.only in (None, "admet"):
                work = chunks(drugs(args.molecules), args.chunk, {})
                resources = {"cpu": 1, "gpu": 1} if args.gpu else {"cpu": 1}
                pool_s = pool("admet-ai", work, args.cores)
                aidd_run = ours.run("admet-ai", "admet", work, resources, [])
                single_s = None if args.no_single else single("admet-ai", work)
                results.append(report("admet-ai", args.molecules, single_s, pool_s, aidd_run, args.cores))
            if args.only in (None, "vina"):
                params = {"target": "ABL1", "exhaustiveness": args.exhaustiveness, "num_poses": 3, "seed": 1}
                work = chunks(drugs(args.dockings, max_mw=350), 1, params)
                pool_s = pool("vina", work, args.cores)
                aidd_run = ours.run("vina", "docking", work, {"cpu": 1}, ["*.sdf"])
                single_s = None if args.no_single else single("vina", work)
                results.append(report("vina", args.dockings, single_s, pool_s, aidd_run, args.cores))
        finally:
            ours.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
