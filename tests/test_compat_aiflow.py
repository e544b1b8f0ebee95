"""Coming from AIFlow: its documented requests replayed as written against a real coordinator and a real agent
running an `@register_inference_function` plugin; its SDK's polling loop sees its own status words."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.config import Settings
from tests.agent_helpers import AgentProcess
from tests.helpers import serving
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
GATEWAY_KEY = "gateway-key-0001"
KEYS = [{"name": "ops", "role": "operator", "key": "aiflow-ops-key-1"},
        {"name": "sdk", "role": "submit", "key": GATEWAY_KEY, "profile": "aiflow"}]
AGENT_TOKEN = "aiflow-agent-token-1"
PLUGIN = textwrap.dedent("""
    from nodeagent.plugins import register_inference_function

    @register_inference_function("text_classification")
    def classify(model_spec, payload, inference_params):
        if payload.get("fail"):
            raise RuntimeError("model exploded")
        label = "positive" if "good" in payload["text"] else "negative"
        return {"label": label, "model": model_spec["name"], "top_k": inference_params.get("top_k")}
""")


def poll(http: httpx.Client, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The SDK's loop: GET the task until SUCCESS, FAILED or TIMEOUT."""
    def ended() -> dict[str, Any] | None:
        task = http.get(f"/api/v1/tasks/{task_id}").json()
        assert task["status"] in ("PENDING", "PROCESSING", "SUCCESS", "FAILED", "TIMEOUT"), task["status"]
        return dict(task) if task["status"] in ("SUCCESS", "FAILED", "TIMEOUT") else None
    return wait_until(ended, timeout, f"task {task_id} to finish", interval=0.2)


def test_gateway_requests_and_plugins(settings: Settings, clean_db: None, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "gateway_plugins.py").write_text(PLUGIN)
    with serving(settings, api_keys=KEYS, agent_token=AGENT_TOKEN, max_retries=0) as (server, anonymous):
        agent = AgentProcess(server.url, tmp_path, "infer-1", "--token", AGENT_TOKEN, "--plugin-module",
                             "gateway_plugins", env={"PYTHONPATH": str(plugins)})
        try:
            with httpx.Client(base_url=server.url, timeout=30,
                              headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as sdk:
                sent = sdk.post("/api/v1/tasks_json", json={
                    "task_type": "text_classification", "model_spec": {"name": "bert-sst2"},
                    "payload": {"text": "a good film"}, "inference_params": {"top_k": 1}})
                assert sent.status_code == 200, sent.text
                accepted = sent.json()
                assert set(accepted) == {"task_id", "status", "created_at", "message"}
                assert accepted["status"] == "PENDING"
                done = poll(sdk, accepted["task_id"])
                assert done["status"] == "SUCCESS"
                assert done["result"] == {"label": "positive", "model": "bert-sst2", "top_k": 1}

                form = sdk.post("/api/v1/tasks_form", data={
                    "task_type": "text_classification", "model_spec": '{"name": "bert-sst2"}',
                    "payload": '{"text": "bad", "fail": true}', "inference_params": "{}"},
                    files=[("files", ("review.txt", b"not good", "text/plain"))])
                assert form.status_code == 200, form.text
                failed = poll(sdk, form.json()["task_id"])
                assert failed["status"] == "FAILED" and "model exploded" in failed["error"]
                assert failed["input_files"] == [f"tasks/{failed['id']}/inputs/review.txt"]

                bad = sdk.post("/api/v1/tasks_form", data={"task_type": "x", "payload": "{oops"})
                assert bad.status_code == 400 and bad.json()["field"] == "payload"
            ops = anonymous.get(f"/api/v1/tasks/{accepted['task_id']}",
                                headers={"Authorization": "Bearer aiflow-ops-key-1"}).json()
            assert ops["status"] == "succeeded" and "task_id" not in ops  # our own clients see our words
            assert anonymous.get("/health").json()["status"] == "ok"
        finally:
            agent.stop(signal.SIGTERM)
