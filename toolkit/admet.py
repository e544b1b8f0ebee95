"""`admet-ai`: ADMET-AI's Chemprop ensembles (41 endpoints, physicochemical properties, DrugBank percentiles).

The models load once per process (about 9 s on a CPU) and stay loaded in the warm plugin host for the
tasks that follow. A task given GPUs runs on them when torch sees CUDA; otherwise on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from typing import Any

import torch
from admet_ai import ADMETModel
from lightning import pytorch as pl
from rdkit import Chem
from tqdm import tqdm

from nodeagent.plugins import TaskContext
from toolkit.inputs import Molecule

_model: ADMETModel | None = None
_cuda_devices: str | None = None
"""CUDA_VISIBLE_DEVICES when this process first asked torch about CUDA: CUDA keeps that view for good."""


class QuietADMETModel(ADMETModel):
    """ADMET-AI's model without progress bars in the task's log, and with predictions brought back from a GPU."""

    def _make_ensemble_predictions(self, data_loader: Any) -> dict[str, Any]:
        task_to_preds = {}
        for tasks, models in zip(self.task_lists, self.model_lists, strict=True):
            with torch.inference_mode():
                trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                     enable_model_summary=False, accelerator=self.device, devices=1)
                batches: list[Any] = [trainer.predict(model=model, dataloaders=data_loader) for model in models]
                preds = torch.stack([torch.cat(b, dim=0).cpu() for b in batches]).mean(dim=0).numpy()
            for i, task in enumerate(tasks):
                task_to_preds[task] = preds[:, i]
        return task_to_preds


def model() -> ADMETModel:
    """The process's ADMET-AI model, loaded on first use."""
    global _model
    if _model is None:
        tqdm.monitor_interval = 0  # its monitor thread, left behind, would retire the warm host after every task
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        with contextlib.redirect_stderr(io.StringIO()):
            _model = QuietADMETModel(num_workers=0)  # worker processes would fork a CUDA process: no
    return _model


def device(context: TaskContext) -> str:
    """Where this task runs: "cuda" when it was given GPUs that this process can use, else "cpu".

    CUDA fixes the visible devices at its first use in a process; a warm host that first used other GPUs (or
    none) cannot switch, so such a task runs on the CPU and retires the host (the next one starts afresh).
    """
    global _cuda_devices
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if _cuda_devices is None:
        _cuda_devices = visible
    if not context.gpus:
        return "cpu"
    if visible != _cuda_devices:
        context.log(f"admet-ai: this plugin host used CUDA devices {_cuda_devices!r}, not {visible!r}: CPU this "
                    "time, and a fresh host for the next task")
        context.retire_host()
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _number(value: Any) -> float | None:
    """A JSON number (PostgreSQL's JSON has no NaN or infinity)."""
    number = float(value)
    return number if math.isfinite(number) else None


def rows(inputs: list[Molecule], context: TaskContext) -> list[dict[str, Any]]:
    """A row per input molecule: ADMET-AI's columns, or `error` for an unreadable SMILES."""
    where = device(context)
    torch.set_num_threads(max(1, int(float((context.task.get("resources") or {}).get("cpu") or 1))))  # its slot
    admet = model()
    admet.device = where
    found: list[dict[str, Any]] = [{"name": m.name, "smiles": m.smiles} for m in inputs]
    valid = [i for i, m in enumerate(inputs) if m.smiles.strip() and Chem.MolFromSmiles(m.smiles) is not None]
    for i in sorted(set(range(len(inputs))) - set(valid)):
        found[i]["error"] = f"invalid SMILES: {inputs[i].smiles!r}"
    if valid:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            table: Any = admet.predict([inputs[i].smiles for i in valid])  # a DataFrame, given a list
        columns = list(table.columns)
        for position, i in enumerate(valid):
            values = table.iloc[position]
            found[i].update({c: _number(values[c]) for c in columns})
            found[i]["device"] = where
    return found
