"""The pack's task types, registered with the agent's `@task_type` (entry point `aidd.task_types`: `chem`).

This module imports no chemistry: every plugin host loads it, also on hosts without the `chem` extra, where
these task types fail permanently with a line saying what to install. The heavy modules load on a host's
first task of each type and stay loaded for the tasks after it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from nodeagent.plugins import PermanentError, TaskContext, task_type
from toolkit.inputs import COLUMNS, ROWS, molecules

INSTALL = "pip install torch==2.13.0 'aidd[chem]'"


def _load(module: str) -> ModuleType:
    """A pack module, or a permanent error naming the missing package and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PermanentError(f"this agent lacks the chem task pack ({exc.name or exc}): {INSTALL}") from None


def _inputs(params: dict[str, Any]) -> list[Any]:
    try:
        return molecules(params)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


def _outcome(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's result: its rows, and their columns in order (PostgreSQL's JSON keeps no key order).

    Raises:
        PermanentError: no molecule could be used; the message names each (the first ten) and why.
    """
    failed = [r for r in rows if "error" in r]
    if rows and len(failed) == len(rows):
        reasons = "; ".join(f"{r['name'] or r['smiles']}: {r['error']}" for r in failed[:10])
        more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
        raise PermanentError(f"no molecule could be used: {reasons}{more}")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return {ROWS: rows, COLUMNS: columns, "molecules": len(rows), "errors": len(failed)}


@task_type("rdkit-props")
def rdkit_props(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Descriptors, QED, Lipinski / Veber / Egan violations and PAINS / Brenk alerts of `smiles` (RDKit)."""
    inputs = _inputs(params)
    return _outcome(_load("toolkit.props").rows(inputs))


@task_type("admet-ai")
def admet_ai(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """ADMET-AI predictions and DrugBank percentiles of `smiles` (on the task's GPU when it has one)."""
    inputs = _inputs(params)
    return _outcome(_load("toolkit.admet").rows(inputs, context))


@task_type("vina")
def vina(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Dock `smiles` against `target` (dockstring) or `receptor` + `center` + `size`; poses as SDF files."""
    inputs = _inputs(params)
    return _outcome(_load("toolkit.docking").rows(inputs, params, context))
