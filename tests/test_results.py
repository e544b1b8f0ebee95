"""Campaigns end in one table: `aidd submit --chunk`, the streamed results route and `aidd results`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest

from aiddclient.cli import main as cli_main
from coordinator.server import BackgroundServer
from tests.agent_helpers import AgentProcess
from tests.support.agent import HttpAgent

Captured = pytest.CaptureFixture[str]


def run(capsys: Captured, server: BackgroundServer, *argv: str) -> tuple[int, str, str]:
    code = cli_main([*argv, "--url", server.url])
    out, err = capsys.readouterr()
    return code, out, err


def test_chunks_and_the_table_of_a_batch(api_server: BackgroundServer, client: httpx.Client, capsys: Captured,
                                         tmp_path: Path) -> None:
    """Three chunks: one succeeds with rows (one of them an error row), one fails, one still waits."""
    library = tmp_path / "library.smi"
    library.write_text("CCO ethanol\nc1ccccc1 benzene\n# a comment\nC1CC\tbroken ring\nCC(=O)O\nCCN amine\n")
    code, out, err = run(capsys, api_server, "submit", "admet", "rdkit-props", "--file", str(library), "--chunk", "2",
                         "--max-retries", "0")
    assert code == 0, err
    batch_id = out.split()[-1]
    tasks = sorted(client.get("/api/v1/tasks", params={"batch_id": batch_id}).json()["items"], key=lambda t: t["seq"])
    assert [t["input_params"] for t in tasks] == [
        {"smiles": ["CCO", "c1ccccc1"], "names": ["ethanol", "benzene"]},
        {"smiles": ["C1CC", "CC(=O)O"], "names": ["broken ring", "4"]},
        {"smiles": ["CCN"], "names": ["amine"]}]
    agent = HttpAgent.register(client)
    first, second = agent.lease(max_tasks=2)
    rows = [{"name": "ethanol", "smiles": "CCO", "mw": 46.07, "alerts": []},
            {"name": "benzene", "smiles": "c1ccccc1", "error": "invalid valence"}]
    agent.report(first, "succeeded", result={"rows": rows, "columns": ["name", "smiles", "mw", "alerts", "error"]})
    agent.report(second, "failed", error="the host ran out of memory")

    reply = client.get(f"/api/v1/batches/{batch_id[:8]}/results", params={"format": "csv"})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(reply.text)))
    assert list(table[0]) == ["name", "smiles", "task_id", "attempt", "status", "error", "mw", "alerts"]
    assert [(r["name"], r["smiles"], r["status"], r["error"], r["mw"], r["alerts"]) for r in table] == [
        ("ethanol", "CCO", "succeeded", "", "46.07", "[]"),
        ("benzene", "c1ccccc1", "succeeded", "invalid valence", "", ""),
        ("broken ring", "C1CC", "failed", "the host ran out of memory", "", ""),
        ("4", "CC(=O)O", "failed", "the host ran out of memory", "", ""),
        ("amine", "CCN", "pending", "", "", "")]
    assert table[0]["task_id"] == first["task_id"] and table[0]["attempt"] == "1"

    code, out, _ = run(capsys, api_server, "results", "--batch", batch_id, "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 5 and lines[0]["mw"] == 46.07 and lines[0]["alerts"] == []
    assert lines[1]["mw"] is None and lines[4]["attempt"] == 0

    pyarrow = pytest.importorskip("pyarrow.parquet")
    code, _, err = run(capsys, api_server, "results", "--batch", batch_id, "--format", "parquet",
                       "-o", str(tmp_path / "out.parquet"))
    assert code == 0 and err.strip() == f"wrote {tmp_path / 'out.parquet'}"
    parquet = pyarrow.read_table(tmp_path / "out.parquet")
    assert parquet.num_rows == 5 and str(parquet.schema.field("mw").type) == "double"
    assert parquet.column("name").to_pylist() == ["ethanol", "benzene", "broken ring", "4", "amine"]
    assert parquet.column("alerts").to_pylist()[0] == "[]"


def test_a_task_without_rows_is_one_row_and_bad_requests_are_one_line(api_server: BackgroundServer,
                                                                       client: httpx.Client, capsys: Captured) -> None:
    reply = client.post("/api/v1/tasks", json={"tasks": [{"service": "misc", "task_type": "noop"}] * 2, "name": "x"})
    batch_id = reply.json()["batch_id"]
    agent = HttpAgent.register(client)
    plain, undeclared = agent.lease(max_tasks=2)
    agent.report(plain, "succeeded", result={"ok": True})
    agent.report(undeclared, "succeeded", result={"rows": [{"smiles": "CCO", "logp": -0.1}]})  # no "columns"
    lines = [json.loads(line) for line in client.get(f"/api/v1/batches/{batch_id}/results").text.splitlines()]
    assert list(lines[0]) == ["name", "smiles", "task_id", "attempt", "status", "error", "logp", "result"]
    by_task = {line["task_id"]: line for line in lines}
    assert by_task[plain["task_id"]]["result"] == {"ok": True}
    assert (by_task[undeclared["task_id"]]["smiles"], by_task[undeclared["task_id"]]["logp"]) == ("CCO", -0.1)
    assert client.get(f"/api/v1/batches/{batch_id}/results", params={"format": "xls"}).status_code == 422
    assert client.get("/api/v1/batches/8d2a3c52-1b1e-4a83-9d52-4e1c1e7a1b2f/results").status_code == 404

    code, _, err = run(capsys, api_server, "results", "--batch", "8d2a3c52-1b1e-4a83-9d52-4e1c1e7a1b2f")
    assert code == 1 and err.startswith("aidd: ") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, api_server, "submit", "admet", "rdkit-props", "--chunk", "0")
    assert code == 2 and err.startswith("aidd: --chunk: ")


@pytest.mark.slow
def test_a_real_screen_through_an_agent(api_server: BackgroundServer, client: httpx.Client, capsys: Captured,
                                        tmp_path: Path) -> None:
    """`rdkit-props` for real on a real agent: five molecules in chunks of two, one of them unreadable."""
    pytest.importorskip("rdkit")
    library = tmp_path / "drugs.smi"
    library.write_text("CC(=O)Oc1ccccc1C(=O)O aspirin\nCn1cnc2c1c(=O)n(C)c(=O)n2C caffeine\nnot-a-smiles junk\n"
                       "CC(C)Cc1ccc(cc1)C(C)C(=O)O ibuprofen\nCC(=O)Nc1ccc(O)cc1 paracetamol\n")
    code, out, err = run(capsys, api_server, "submit", "admet", "rdkit-props", "--file", str(library), "--chunk", "2")
    assert code == 0, err
    batch_id = out.split()[-1]
    agent = AgentProcess(api_server.url, tmp_path, "chem-node", "--slots", "2")
    try:
        code, out, _ = run(capsys, api_server, "wait", "--batch", batch_id, "--timeout", "60")
        assert code == 0, agent.output
    finally:
        agent.stop()
    code, out, _ = run(capsys, api_server, "results", "--batch", batch_id)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in table] == ["aspirin", "caffeine", "junk", "ibuprofen", "paracetamol"]
    assert table[0]["mw"] == "180.159" and table[0]["brenk_alerts"] == '["phenol_ester"]'
    assert table[2]["error"] == "invalid SMILES: 'not-a-smiles'" and table[2]["mw"] == ""
    assert {r["status"] for r in table} == {"succeeded"} and {r["attempt"] for r in table} == {"1"}
    assert len({r["task_id"] for r in table}) == 3
