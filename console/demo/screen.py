"""`aidd --demo real`: a real screen on this machine's agent with the chem task pack.

Approved drugs from ADMET-AI's DrugBank reference set go through `rdkit-props` and `admet-ai` in chunks
(two batches); when the ADMET screen has finished, the best few (highest QED among those with no Lipinski
violation and a low predicted hERG risk) are docked with `vina` against two dockstring targets at low
exhaustiveness, so the whole screen takes minutes on two cores. Everything goes through the API, so the
console shows it as any batch: progress, ETA, logs, results (`aidd results --batch ID`).
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import json
import logging
import threading
from pathlib import Path
from typing import Any

from aiddclient.client import ApiError, CoordinatorClient
from aiddclient.submitfile import chunked, submit_in_chunks
from aiddclient.taskcommands import EXIT_TIMED_OUT, batch_counter, wait_for

log = logging.getLogger(__name__)

DRUGS = 500
"""Approved drugs screened (the reference set has about 2 800)."""
CHUNK = 25
"""Molecules per rdkit-props / admet-ai task."""
BEST = 4
"""Molecules docked."""
TARGETS = ("ABL1", "EGFR")
DOCKING = {"exhaustiveness": 1, "num_poses": 3, "seed": 1}
REAL_SCREEN = (f"A real screen runs on the local agent: {DRUGS} approved drugs through rdkit-props and admet-ai, "
               f"then Vina docking of the best {BEST} against {' and '.join(TARGETS)} (Batches pane, 4). "
               "Export a table with `aidd results --batch ID`.")
NEEDS = ("rdkit", "admet_ai", "vina", "meeko", "dockstring")


def missing_packages() -> list[str]:
    """The task pack's packages this Python lacks (the real demo runs its agent with this Python)."""
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def approved_drugs(limit: int = DRUGS) -> list[dict[str, str]]:
    """The first `limit` drugs of ADMET-AI's DrugBank approved set: {"smiles", "name"} (found without importing
    admet_ai, which would load torch into the console)."""
    spec = importlib.util.find_spec("admet_ai")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "data" / "drugbank_approved.csv"
    with path.open(newline="") as file:
        return [{"smiles": r["smiles"], "name": r["name"]} for r, _ in zip(csv.DictReader(file), range(limit),
                                                                                strict=False)]


def best(rows: list[dict[str, Any]], count: int = BEST) -> list[dict[str, Any]]:
    """The `count` ADMET-AI rows with the highest QED among those without a Lipinski violation (ADMET-AI's
    `Lipinski` counts the rules met, of 4) and with a predicted hERG blocking probability under 0.5."""
    fit = [r for r in rows if r.get("error") is None and r.get("QED") is not None and r.get("Lipinski") == 4
           and (r.get("hERG") or 0) < 0.5]
    return sorted(fit, key=lambda r: -float(r["QED"]))[:count]


async def run_screen(client: CoordinatorClient, drugs: list[dict[str, str]], stop: threading.Event,
                     chunk: int = CHUNK, docked: int = BEST, targets: tuple[str, ...] = TARGETS) -> dict[str, str]:
    """Submit the screen, wait for the ADMET batch, then submit the docking of the best `docked`; returns
    {task type: batch id}."""
    inputs = chunked(drugs, chunk, "smiles")
    batches = {}
    for task_type in ("rdkit-props", "admet-ai"):
        answer = await submit_in_chunks(client, {"service": "admet", "task_type": task_type, "max_retries": 1},
                                        inputs, name=f"real screen: {task_type}, {len(drugs)} approved drugs")
        batches[task_type] = str(answer["batch_id"])
    counter = batch_counter(client, batches["admet-ai"])
    while not stop.is_set():
        status, _ = await wait_for(counter, 2.0)
        if status != EXIT_TIMED_OUT:
            break
    if stop.is_set():
        return batches
    rows = []
    async for line in _lines(client.results(batches["admet-ai"], "jsonl")):
        rows.append(json.loads(line))
    chosen = best(rows, docked)
    docking = [{"input_params": {"smiles": r["smiles"], "name": r["name"], "target": target, **DOCKING}}
               for r in chosen for target in targets]
    if docking:
        answer = await submit_in_chunks(client, {"service": "docking", "task_type": "vina", "outputs": ["*.sdf"],
                                                 "max_retries": 1}, [d["input_params"] for d in docking],
                                        name=f"real screen: vina, best {len(chosen)} against {', '.join(targets)}")
        batches["vina"] = str(answer["batch_id"])
    return batches


async def _lines(chunks: Any) -> Any:
    """Lines of a byte stream."""
    held = b""
    async for chunk in chunks:
        held += chunk
        *complete, held = held.split(b"\n")
        for line in complete:
            if line:
                yield line
    if held:
        yield held


class RealScreen:
    """Runs `run_screen` on a thread of its own while the console runs."""

    def __init__(self, url: str, api_key: str | None, drugs: int = DRUGS) -> None:
        self.url, self.api_key, self.drugs = url, api_key, drugs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="aidd-real-screen", daemon=True)

    def start(self) -> RealScreen:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _main(self) -> None:
        async def screen() -> None:
            async with CoordinatorClient(self.url, self.api_key) as client:
                batches = await run_screen(client, approved_drugs(self.drugs), self._stop)
            log.info("real screen: batches %s", batches)
        try:
            asyncio.run(screen())
        except ApiError as exc:
            log.warning("real screen stopped: %s", exc)
