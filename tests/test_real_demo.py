"""`aidd --demo real`: the screen it submits, run for real on a real agent (four drugs, one docked against one
target; skipped without the chem extra)."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
from pathlib import Path

import httpx
import pytest

from aiddclient.cli import main as cli_main
from aiddclient.client import CoordinatorClient
from console.demo.screen import approved_drugs, best, missing_packages, run_screen
from coordinator.server import BackgroundServer
from tests.agent_helpers import AgentProcess


def test_the_approved_drugs_and_the_choice_of_the_best() -> None:
    if missing_packages():
        pytest.skip("the chem extra is not installed")
    drugs = approved_drugs(5)
    assert len(drugs) == 5 and all(d["smiles"] and d["name"] for d in drugs)
    rows = [{"name": "a", "QED": 0.9, "Lipinski": 4, "hERG": 0.7},  # a hERG risk
            {"name": "b", "QED": 0.8, "Lipinski": 4, "hERG": 0.1},
            {"name": "c", "QED": 0.95, "Lipinski": 3, "hERG": 0.1},  # a Lipinski rule broken
            {"name": "d", "QED": 0.5, "Lipinski": 4, "hERG": 0},
            {"name": "e", "error": "invalid SMILES"}]
    assert [r["name"] for r in best(rows, 3)] == ["b", "d"]


@pytest.mark.slow
def test_the_real_screen_runs_on_a_real_agent(api_server: BackgroundServer, client: httpx.Client,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if missing_packages():
        pytest.skip("the chem extra is not installed")
    agent = AgentProcess(api_server.url, tmp_path, "screen-node", "--slots", "1")  # one warm host: models load once
    try:
        async def screen() -> dict[str, str]:
            async with CoordinatorClient(api_server.url) as api:
                return await run_screen(api, approved_drugs(4), threading.Event(), chunk=2, docked=1,
                                        targets=("ABL1",))
        batches = asyncio.run(screen())
        assert set(batches) == {"rdkit-props", "admet-ai", "vina"}
        for batch_id in batches.values():
            waited = cli_main(["wait", "--batch", batch_id, "--timeout", "120", "--url", api_server.url])
            assert waited == 0, agent.output
    finally:
        agent.stop()
    capsys.readouterr()
    assert cli_main(["results", "--batch", batches["vina"], "--url", api_server.url]) == 0
    docked = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["target"] for r in docked] == ["ABL1"] and all(float(r["best_affinity"]) < 0 for r in docked)
    task = client.get(f"/api/v1/tasks/{docked[0]['task_id']}/files").json()
    assert [f["name"] for f in task["attempts"][0]["outputs"]] == [docked[0]["pose_file"]]


def test_without_the_extra_the_real_demo_is_one_line_saying_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("console.demo.screen.NEEDS", ("json", "no_such_package_here"))  # json: always there
    assert cli_main(["--demo", "real", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == ("aidd: --demo real: the chem task pack is not installed (no no_such_package_here): "
                   "pip install torch==2.13.0 'aidd[chem]'\n")
