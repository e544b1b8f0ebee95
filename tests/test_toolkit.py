"""The chem task pack run for real on a few molecules (skipped where the `chem` extra is not installed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("admet_ai")
pytest.importorskip("vina")
pytest.importorskip("meeko")
pytest.importorskip("dockstring")

from nodeagent.plugins import PermanentError, TaskContext, discover
from toolkit import docking

ASPIRIN, CAFFEINE = "CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
REGISTRY = discover()


def run(task_type: str, params: dict[str, object], work_dir: Path, cpu: float = 1) -> dict[str, object]:
    context = TaskContext(work_dir=work_dir, task={"resources": {"cpu": cpu}})
    result = REGISTRY[task_type](params, context)
    assert isinstance(result, dict)
    return result


def test_rdkit_props_known_values_and_an_invalid_row(tmp_path: Path) -> None:
    result = run("rdkit-props", {"smiles": [ASPIRIN, CAFFEINE, "C1CC"], "names": ["aspirin", "caffeine", "broken"]},
                 tmp_path)
    aspirin, caffeine, broken = result["rows"]  # type: ignore[misc]
    assert aspirin["name"] == "aspirin" and aspirin["canonical_smiles"] == "CC(=O)Oc1ccccc1C(=O)O"
    assert aspirin["mw"] == pytest.approx(180.159, abs=0.01) and aspirin["clogp"] == pytest.approx(1.31, abs=0.01)
    assert (aspirin["tpsa"], aspirin["hbd"], aspirin["hba"], aspirin["rotatable_bonds"]) == (63.6, 1, 3, 2)
    assert aspirin["qed"] == pytest.approx(0.55, abs=0.01) and aspirin["lipinski_violations"] == 0
    assert aspirin["brenk_alerts"] == ["phenol_ester"] and aspirin["pains_alerts"] == []
    assert caffeine["mw"] == pytest.approx(194.19, abs=0.01) and caffeine["hbd"] == 0 and caffeine["rings"] == 2
    assert caffeine["fraction_sp3"] == pytest.approx(0.375) and caffeine["formal_charge"] == 0
    assert broken == {"name": "broken", "smiles": "C1CC", "error": "invalid SMILES: 'C1CC'"}
    assert (result["molecules"], result["errors"]) == (3, 1)


def test_a_task_with_no_usable_molecule_fails_permanently_naming_them(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="no molecule could be used: x1: invalid SMILES: 'C1CC'; "):
        run("rdkit-props", {"smiles": ["C1CC", "nonsense"], "names": ["x1", "x2"]}, tmp_path)
    with pytest.raises(PermanentError, match=r"input_params\.names: give one name per SMILES"):
        run("rdkit-props", {"smiles": [ASPIRIN], "names": ["a", "b"]}, tmp_path)


def test_admet_ai_predicts_in_range_for_a_known_drug(tmp_path: Path) -> None:
    result = run("admet-ai", {"smiles": [ASPIRIN, "xx"]}, tmp_path)
    aspirin, broken = result["rows"]  # type: ignore[misc]
    assert broken["error"] == "invalid SMILES: 'xx'"
    assert aspirin["molecular_weight"] == pytest.approx(180.16, abs=0.01) and aspirin["device"] == "cpu"
    assert 0.9 < aspirin["HIA_Hou"] <= 1  # absorbed in the human intestine
    assert 0 <= aspirin["AMES"] < 0.5 and 0 <= aspirin["hERG"] < 0.5
    percentiles = [k for k in aspirin if k.endswith("_drugbank_approved_percentile")]
    assert len(percentiles) > 40 and all(0 <= aspirin[k] <= 100 for k in percentiles)


def test_vina_docks_against_a_dockstring_target_into_an_sdf(tmp_path: Path) -> None:
    result = run("vina", {"smiles": ASPIRIN, "name": "aspirin", "target": "ABL1", "exhaustiveness": 1,
                          "num_poses": 3, "seed": 7}, tmp_path)
    (row,) = result["rows"]  # type: ignore[misc]
    assert row["best_affinity"] < -3 and row["best_affinity"] == min(row["affinities"]) and row["poses"] >= 1
    sdf = (tmp_path / row["pose_file"]).read_text()
    assert row["pose_file"] == "aspirin-ABL1.sdf" and sdf.count("$$$$") == row["poses"]


def test_the_same_seed_gives_the_same_docking_on_an_uploaded_receptor(tmp_path: Path) -> None:
    """A receptor given as a file with a small box (quick maps); a fresh Vina each time, so nothing is reused."""
    shutil.copy(docking.get_targets_dir() / "ABL1_target.pdbqt", tmp_path / "receptor.pdbqt")
    params = {"smiles": ["CCO", ASPIRIN], "receptor": "receptor.pdbqt", "center": [15.851, 14.647, 3.904],
              "size": [14, 14, 14], "exhaustiveness": 1, "num_poses": 2, "seed": 3}
    runs = []
    for _ in range(2):
        docking._docks.clear()
        runs.append([r["affinities"] for r in run("vina", params, tmp_path)["rows"]])  # type: ignore[attr-defined]
    assert runs[0] == runs[1] and all(a[0] < 0 for a in runs[0])
    with pytest.raises(PermanentError, match="no dockstring target 'NOPE'"):
        run("vina", {"smiles": ASPIRIN, "target": "NOPE"}, tmp_path)
    with pytest.raises(PermanentError, match=r"input_params.center: give three numbers"):
        run("vina", {**params, "center": [1, 2]}, tmp_path)
