"""`vina`: dock molecules (RDKit ETKDG conformer → Meeko → AutoDock Vina) against a receptor and search box.

The receptor is one of dockstring's prepared targets (its PDBQT and box ship in the package), or a PDBQT
file given with the task and a box in the parameters. Vina's grid maps take seconds to compute; they are
kept per receptor, box, CPUs and seed in the warm plugin host, so the next molecules and tasks only dock.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockstring.utils import get_targets_dir, parse_search_box_conf
from meeko import MoleculePreparation, PDBQTMolecule, PDBQTWriterLegacy, RDKitMolCreate
from rdkit import Chem
from rdkit.Chem import AllChem
from vina import Vina

from nodeagent.plugins import PermanentError, TaskContext
from toolkit.inputs import Molecule

KEPT_RECEPTORS = 2
"""Receptors whose grid maps a process keeps (tens of MB each)."""
_docks: OrderedDict[tuple[Any, ...], Vina] = OrderedDict()


@dataclass(frozen=True)
class Site:
    """Where to dock: a receptor PDBQT, the centre and size of its search box (Å), and a short label."""

    receptor: Path
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    label: str


def targets() -> list[str]:
    """The names of dockstring's prepared targets."""
    return sorted(p.name.removesuffix("_target.pdbqt") for p in get_targets_dir().glob("*_target.pdbqt"))


def site(params: dict[str, Any], work_dir: Path) -> Site:
    """The docking site the parameters name: `target` (a dockstring target) or `receptor` (a PDBQT file given
    with the task) with `center` and `size` (three numbers each).

    Raises:
        PermanentError: an unknown target, a missing receptor file, or a bad box.
    """
    if "target" in params:
        name = str(params["target"])
        receptor = get_targets_dir() / f"{name}_target.pdbqt"
        if not re.fullmatch(r"\w+", name) or not receptor.is_file():
            raise PermanentError(f"input_params.target: no dockstring target {name!r} (known: {', '.join(targets())})")
        box = parse_search_box_conf(get_targets_dir() / f"{name}_conf.txt")
        return Site(receptor, (box["center_x"], box["center_y"], box["center_z"]),
                    (box["size_x"], box["size_y"], box["size_z"]), name)
    if "receptor" not in params:
        raise PermanentError("input_params: give `target` (a dockstring target) or `receptor` (a PDBQT input file) "
                             "with `center` and `size`")
    receptor = work_dir / str(params["receptor"])
    if not receptor.is_file():
        raise PermanentError(f"input_params.receptor: no input file {params['receptor']!r} came with the task")
    return Site(receptor, _triple(params, "center"), _triple(params, "size"), receptor.stem)


def _triple(params: dict[str, Any], key: str) -> tuple[float, float, float]:
    value = params.get(key)
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, int | float) for v in value):
        raise PermanentError(f"input_params.{key}: give three numbers (x, y, z in Å)")
    x, y, z = (float(v) for v in value)
    return x, y, z


def _number(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PermanentError(f"input_params.{key}: give a whole number from {low} to {high}")
    return value


def docker(where: Site, cpus: int, seed: int) -> Vina:
    """A Vina with its receptor and grid maps ready (kept for the next tasks on this site)."""
    key = (str(where.receptor), where.receptor.stat().st_mtime_ns, where.center, where.size, cpus, seed)
    if key in _docks:
        _docks.move_to_end(key)
        return _docks[key]
    vina = Vina(sf_name="vina", cpu=cpus, seed=seed, verbosity=0)
    vina.set_receptor(str(where.receptor))
    vina.compute_vina_maps(center=list(where.center), box_size=list(where.size))
    _docks[key] = vina
    while len(_docks) > KEPT_RECEPTORS:
        _docks.popitem(last=False)
    return vina


def ligand(smiles: str, seed: int) -> str:
    """The ligand's PDBQT: protonated, one ETKDG conformer (seeded), prepared by Meeko.

    Raises:
        ValueError: the SMILES cannot be read, embedded in 3D or prepared.
    """
    mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    if mol is None:
        raise ValueError(f"invalid SMILES: {smiles!r}")
    mol = Chem.AddHs(mol)
    options = AllChem.ETKDGv3()
    options.randomSeed = seed
    if AllChem.EmbedMolecule(mol, options) != 0:
        raise ValueError("no 3D conformer (ETKDG embedding failed)")
    setups = MoleculePreparation().prepare(mol)
    pdbqt, ok, error = PDBQTWriterLegacy.write_string(setups[0])
    if not ok:
        raise ValueError(f"Meeko cannot prepare it: {error.strip()}")
    return str(pdbqt)


def pose_file(molecule: Molecule, index: int, label: str) -> str:
    """The SDF file name of a molecule's poses: its name (or its place in the task) and the site."""
    stem = re.sub(r"[^\w.-]+", "_", molecule.name or f"mol{index + 1}").strip("._") or f"mol{index + 1}"
    return f"{stem}-{label}.sdf"


def rows(inputs: list[Molecule], params: dict[str, Any], context: TaskContext) -> list[dict[str, Any]]:
    """Dock each molecule; a row per molecule with the best and per-pose affinities (kcal/mol) and the SDF of
    its poses (written to the working dir: upload it with the task's `outputs`, e.g. `*.sdf`)."""
    where = site(params, context.work_dir)
    exhaustiveness = _number(params, "exhaustiveness", 8, 1, 64)
    poses = _number(params, "num_poses", 9, 1, 20)
    seed = _number(params, "seed", 0, 0, 2**31 - 1)
    cpus = max(1, int(float((context.task.get("resources") or {}).get("cpu") or 1)))
    vina = docker(where, cpus, seed)
    found = []
    for index, molecule in enumerate(inputs):
        row: dict[str, Any] = {"name": molecule.name, "smiles": molecule.smiles, "target": where.label}
        try:
            vina.set_ligand_from_string(ligand(molecule.smiles, seed))
        except ValueError as exc:
            found.append({**row, "error": str(exc)})
            continue
        vina.dock(exhaustiveness=exhaustiveness, n_poses=poses)
        energies = [round(float(e[0]), 3) for e in vina.energies(n_poses=poses)]
        sdf, _ = RDKitMolCreate.write_sd_string(PDBQTMolecule(vina.poses(n_poses=poses), skip_typing=True))
        name = pose_file(molecule, index, where.label)
        (context.work_dir / name).write_text(sdf)
        found.append({**row, "best_affinity": energies[0], "affinities": energies, "poses": len(energies),
                      "pose_file": name})
        context.progress((index + 1) / len(inputs), f"docked {index + 1}/{len(inputs)}")
    return found
