"""A realistic drug-design workload: ADMET predictions, docking and generative inference over known drugs.

Shared by the live demo (`aidd --demo`, submitted through the API) and the fixed state behind the
snapshot tests and the README screenshots.
"""

from __future__ import annotations

import random
from typing import Any

from aiddwire import EndReason

MOLECULES: list[tuple[str, str]] = [
    ("aspirin", "CC(=O)OC1=CC=CC=C1C(=O)O"),
    ("caffeine", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"),
    ("ibuprofen", "CC(C)CC1=CC=C(C=C1)C(C)C(=O)O"),
    ("paracetamol", "CC(=O)NC1=CC=C(C=C1)O"),
    ("imatinib", "CC1=C(C=C(C=C1)NC(=O)C2=CC=C(C=C2)CN3CCN(CC3)C)NC4=NC=CC(=N4)C5=CN=CC=C5"),
    ("gefitinib", "COC1=C(C=C2C(=C1)N=CN=C2NC3=CC(=C(C=C3)F)Cl)OCCCN4CCOCC4"),
    ("erlotinib", "COCCOC1=C(C=C2C(=C1)C(=NC=N2)NC3=CC=CC(=C3)C#C)OCCOC"),
    ("osimertinib", "CN1C=C(C2=CC=CC=C21)C3=NC(=NC=C3)NC4=C(C=C(C(=C4)NC(=O)C=C)N(C)CCN(C)C)OC"),
    ("lapatinib", "CS(=O)(=O)CCNCC1=CC=C(O1)C2=CC3=C(C=C2)N=CN=C3NC4=CC(=C(C=C4)OCC5=CC(=CC=C5)F)Cl"),
    ("sorafenib", "CNC(=O)C1=NC=CC(=C1)OC2=CC=C(C=C2)NC(=O)NC3=CC(=C(C=C3)Cl)C(F)(F)F"),
    ("dasatinib", "CC1=C(C(=CC=C1)Cl)NC(=O)C2=CN=C(S2)NC3=CC(=NC(=N3)C)N4CCN(CC4)CCO"),
    ("nilotinib", "CC1=C(C=C(C=C1)C(=O)NC2=CC(=CC(=C2)C(F)(F)F)N3C=C(N=C3)C)NC4=NC=CC(=N4)C5=CN=CC=C5"),
    ("sunitinib", "CCN(CC)CCNC(=O)C1=C(NC(=C1C)C=C2C3=C(C=CC(=C3)F)NC2=O)C"),
    ("vemurafenib", "CCCS(=O)(=O)NC1=C(C(=C(C=C1)F)C(=O)C2=CNC3=C2C=C(C=N3)C4=CC=C(C=C4)Cl)F"),
    ("metformin", "CN(C)C(=N)N=C(N)N"),
    ("atorvastatin", "CC(C)C1=C(C(=C(N1CCC(CC(CC(=O)O)O)O)C2=CC=C(C=C2)F)C3=CC=CC=C3)C(=O)NC4=CC=CC=C4"),
    ("sildenafil", "CCCC1=NN(C2=C1N=C(NC2=O)C3=C(C=CC(=C3)S(=O)(=O)N4CCN(CC4)C)OCC)C"),
    ("celecoxib", "CC1=CC=C(C=C1)C2=CC(=NN2C3=CC=C(C=C3)S(=O)(=O)N)C(F)(F)F"),
    ("diazepam", "CN1C(=O)CN=C(C2=C1C=CC(=C2)Cl)C3=CC=CC=C3"),
    ("fluoxetine", "CNCCC(C1=CC=CC=C1)OC2=CC=C(C=C2)C(F)(F)F"),
    ("omeprazole", "CC1=CN=C(C(=C1OC)C)CS(=O)C2=NC3=C(N2)C=C(C=C3)OC"),
    ("losartan", "CCCCC1=NC(=C(N1CC2=CC=C(C=C2)C3=CC=CC=C3C4=NNN=N4)CO)Cl"),
    ("warfarin", "CC(=O)CC(C1=CC=CC=C1)C2=C(C3=CC=CC=C3OC2=O)O"),
    ("tamoxifen", "CCC(=C(C1=CC=CC=C1)C2=CC=C(C=C2)OCCN(C)C)C3=CC=CC=C3"),
]
"""(name, SMILES) of well-known drugs, kinase inhibitors first."""

TARGETS = [("EGFR", "1M17"), ("ABL1", "2HYY"), ("BRAF", "3OG7"), ("CDK2", "1HCK"), ("HSP90", "2VCI")]
"""(target, PDB id) for docking runs."""

FAILURES: dict[str, tuple[str, EndReason]] = {
    "valence": ("Explicit valence for atom # 3 N, 4, is greater than permitted (RDKit sanitisation)",
                EndReason.PERMANENT),
    "receptor": ("vina: cannot read receptor 'rec_8FJX.pdbqt': No such file or directory", EndReason.ERROR),
    "oom": ("CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 39.39 GiB total capacity)", EndReason.ERROR),
}
"""Errors the demo's simulated workers report for tasks whose parameters ask to fail (`"fail": key`)."""

DEMO_PREFIX = "demo ·"
"""Every batch the demo submits is named with this prefix (so a restart does not seed twice)."""


def admet_batch(count: int, rng: random.Random) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(name, template, inputs) of an ADMET screen over the molecule list (QikProp descriptors)."""
    inputs = []
    for i in range(count):
        name, smiles = MOLECULES[i % len(MOLECULES)]
        inputs.append({"smiles": smiles, "compound": f"{name}-{i // len(MOLECULES) + 1:03d}"})
    template = {"service": "admet", "task_type": "qikprop", "priority": 2, "group": "cpu",
                "name": "QikProp ADMET", "resources": {"cpu": 1, "memory_gb": 1},
                "input_params": {"descriptors": ["QPlogPo/w", "QPlogS", "QPPCaco", "#metab"]}}
    return f"{DEMO_PREFIX} ADMET screen, kinase-focused library", template, inputs


def docking_batch(target: str, pdb: str, count: int) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(name, template, inputs) of a Vina docking run of known inhibitors against one target."""
    inputs = [{"ligand": MOLECULES[i % 14][0], "smiles": MOLECULES[i % 14][1], "pose": i // 14 + 1}
              for i in range(count)]
    template = {"service": "docking", "task_type": "vina", "priority": 3, "group": "gpu",
                "name": f"Vina docking {target}", "resources": {"cpu": 2, "memory_gb": 4, "gpu": 1},
                "input_params": {"receptor": f"{pdb}.pdbqt", "exhaustiveness": 16, "box": [22, 22, 22]},
                "timeout_s": 900}
    return f"{DEMO_PREFIX} docking {target} ({pdb})", template, inputs


def inference_batch(count: int) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(name, template, inputs) of generative sampling runs (half a GPU each)."""
    inputs = [{"scaffold": MOLECULES[i % len(MOLECULES)][1], "samples": 512, "seed": 1000 + i}
              for i in range(count)]
    template = {"service": "inference", "task_type": "reinvent", "priority": 1, "group": "gpu",
                "name": "REINVENT sampling", "resources": {"cpu": 2, "memory_gb": 8, "gpu": 0.5,
                                                           "gpu_memory_gb": 12}}
    return f"{DEMO_PREFIX} REINVENT scaffold sampling", template, inputs


def single_tasks() -> list[dict[str, Any]]:
    """Individual tasks: urgent ones and a few that fail on purpose. Demo tasks go to the demo groups (`cpu`,
    `gpu`) so that a real local agent (`--local-agent`, groups `default` and the host's) never takes them."""
    return [
        {"service": "admet", "task_type": "qikprop", "name": "ADMET prediction", "group": "cpu",
         "input_params": {"smiles": ["CCO", "CC(=O)OC1=CC=CC=C1C(=O)O"]}},
        {"service": "admet", "task_type": "qikprop", "name": "urgent: hERG liability check, lead series B",
         "group": "cpu", "priority": 3, "input_params": {"smiles": MOLECULES[4][1], "model": "herg-v3"}},
        {"service": "admet", "task_type": "qikprop", "name": "ADMET malformed SMILES (fails)", "group": "cpu",
         "input_params": {"smiles": "C1=CC=CN(=C)(C)C1", "fail": "valence"}, "max_retries": 0},
        {"service": "docking", "task_type": "vina", "name": "Vina docking 8FJX (missing receptor)",
         "group": "gpu", "priority": 3, "resources": {"gpu": 1}, "max_retries": 1,
         "input_params": {"receptor": "rec_8FJX.pdbqt", "smiles": MOLECULES[5][1], "fail": "receptor"}},
        {"service": "inference", "task_type": "reinvent", "name": "REINVENT 4096 samples (too big)",
         "group": "gpu", "priority": 1, "resources": {"gpu": 0.5}, "max_retries": 0,
         "input_params": {"samples": 4096, "fail": "oom"}},
    ]


def trickle(rng: random.Random) -> list[dict[str, Any]]:
    """A handful of new tasks, as a pipeline would keep sending them."""
    tasks = []
    for _ in range(rng.randint(3, 8)):
        name, smiles = rng.choice(MOLECULES)
        if rng.random() < 0.7:
            tasks.append({"service": "admet", "task_type": "qikprop", "name": f"QikProp {name}", "group": "cpu",
                          "priority": rng.choice([1, 2, 2, 3]), "input_params": {"smiles": smiles}})
        else:
            target, pdb = rng.choice(TARGETS)
            tasks.append({"service": "docking", "task_type": "vina", "name": f"Vina {target} · {name}",
                          "group": "gpu", "priority": 3, "resources": {"cpu": 2, "gpu": 1},
                          "input_params": {"receptor": f"{pdb}.pdbqt", "smiles": smiles}})
    return tasks
