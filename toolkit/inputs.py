"""The molecules a task names, and how its result carries one row per molecule (standard library only).

Shared by the task types (which read their inputs with it) and the coordinator's results table (which
writes a failed task's molecules as error rows without importing any chemistry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROWS = "rows"
"""Result key of the per-molecule rows: a list of objects, one per input molecule, in input order."""
COLUMNS = "columns"
"""Result key of the rows' keys in the order a table shows them (stored JSON objects keep no key order)."""


@dataclass(frozen=True)
class Molecule:
    """One input: its SMILES and the name it had in the input file (its id in the campaign)."""

    smiles: str
    name: str | None = None


def molecules(params: dict[str, Any]) -> list[Molecule]:
    """The molecules of a task's input_params: `smiles` (one string or a list) and optional `names` (a list of
    the same length) or `name` (one string).

    Raises:
        ValueError: no smiles, or names that do not match them (the message names the parameter).
    """
    smiles = params.get("smiles")
    if isinstance(smiles, str):
        smiles = [smiles]
    if not isinstance(smiles, list) or not smiles or not all(isinstance(s, str) for s in smiles):
        raise ValueError("input_params.smiles: give a SMILES string or a non-empty list of them")
    names = params.get("names")
    if names is None:
        single = params.get("name")
        names = [single] if isinstance(single, str) and len(smiles) == 1 else [None] * len(smiles)
    if not isinstance(names, list) or len(names) != len(smiles):
        raise ValueError(f"input_params.names: give one name per SMILES ({len(smiles)})")
    return [Molecule(s, None if n is None else str(n)) for s, n in zip(smiles, names, strict=True)]
