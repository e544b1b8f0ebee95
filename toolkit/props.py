"""`rdkit-props`: descriptors, drug-likeness rule violations and structural alerts per molecule, with RDKit."""

from __future__ import annotations

from functools import cache
from typing import Any

from rdkit import Chem, RDLogger
from rdkit.Chem import QED, Crippen, Descriptors, FilterCatalog, Lipinski, rdMolDescriptors

from toolkit.inputs import Molecule


@cache
def _catalog(name: str) -> FilterCatalog.FilterCatalog:
    """An RDKit filter catalog (PAINS or BRENK), built once per process."""
    params = FilterCatalog.FilterCatalogParams()
    params.AddCatalog(getattr(FilterCatalog.FilterCatalogParams.FilterCatalogs, name))
    return FilterCatalog.FilterCatalog(params)


def parse(smiles: str) -> Chem.Mol | None:
    """The molecule of a SMILES, or None when RDKit cannot read it (its complaint goes to the task's log)."""
    return Chem.MolFromSmiles(smiles) if smiles.strip() else None


def alerts(mol: Chem.Mol, catalog: str) -> list[str]:
    """Names of the catalog's substructure alerts the molecule matches."""
    return sorted({entry.GetDescription() for entry in _catalog(catalog).GetMatches(mol)})


def properties(mol: Chem.Mol) -> dict[str, Any]:
    """One molecule's row: descriptors, rule violations (Lipinski, Veber, Egan) and PAINS / Brenk alerts."""
    mw, clogp, tpsa = Descriptors.MolWt(mol), Crippen.MolLogP(mol), rdMolDescriptors.CalcTPSA(mol)
    hbd, hba = Lipinski.NumHDonors(mol), Lipinski.NumHAcceptors(mol)
    rotatable = rdMolDescriptors.CalcNumRotatableBonds(mol)
    pains, brenk = alerts(mol, "PAINS"), alerts(mol, "BRENK")
    return {
        "canonical_smiles": Chem.MolToSmiles(mol), "mw": round(mw, 3), "clogp": round(clogp, 3),
        "tpsa": round(tpsa, 2), "hbd": hbd, "hba": hba, "rotatable_bonds": rotatable,
        "rings": rdMolDescriptors.CalcNumRings(mol), "fraction_sp3": round(rdMolDescriptors.CalcFractionCSP3(mol), 3),
        "formal_charge": Chem.GetFormalCharge(mol), "qed": round(QED.qed(mol), 4),
        "lipinski_violations": (mw > 500) + (clogp > 5) + (hbd > 5) + (hba > 10),
        "veber_violations": (rotatable > 10) + (tpsa > 140),
        "egan_violations": (clogp > 5.88) + (tpsa > 131.6),
        "pains_alerts": pains, "brenk_alerts": brenk,
    }


def rows(inputs: list[Molecule]) -> list[dict[str, Any]]:
    """A row per input molecule; an unreadable SMILES is a row with its `error`."""
    RDLogger.DisableLog("rdApp.warning")  # kekulisation and valence chatter; parse errors still reach the log
    found = []
    for molecule in inputs:
        row: dict[str, Any] = {"name": molecule.name, "smiles": molecule.smiles}
        mol = parse(molecule.smiles)
        row.update(properties(mol) if mol is not None else {"error": f"invalid SMILES: {molecule.smiles!r}"})
        found.append(row)
    return found
