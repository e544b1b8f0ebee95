"""Coming from the LLM scheduler: its documented requests, replayed as written against a real coordinator and
agent. Models are services: `max_workers` is the running limit, a task waits unless its model is online."""

from __future__ import annotations

from coordinator.config import Settings
from tests.helpers import serving
from tests.support.agent import HttpAgent

KEYS = [{"name": "ops", "role": "operator", "key": "llm-ops-key-123"},
        {"name": "client", "role": "submit", "key": "llm-client-key-1", "profile": "llm"}]
"""The scheduler's clients get a key of profile `llm` (its status words); the operator's key shows ours."""


def test_model_registry_and_tasks(settings: Settings, clean_db: None) -> None:
    """Register a model, submit to it by `model_id`: the task waits while the model is offline, runs once it
    is online, never more than `max_workers` at once; the client reads the scheduler's status words."""
    with serving(settings, api_keys=KEYS) as (_server, http):
        ops = {"Authorization": "Bearer llm-ops-key-123"}
        client = {"Authorization": "Bearer llm-client-key-1"}
        created = http.post("/api/v1/models", json={"name": "llama-7b", "max_workers": 1}, headers=ops)
        assert created.status_code == 201
        model = created.json()
        assert (model["name"], model["status"], model["max_workers"]) == ("llama-7b", "offline", 1)
        assert [m["id"] for m in http.get("/api/v1/models", headers=ops).json()] == [model["id"]]

        body = {"model_id": model["id"], "type": "text-generation", "input": "Hello", "priority": 2}
        first = http.post("/api/v1/tasks", json=body, headers=client)
        assert first.status_code == 201, first.text
        task = first.json()
        assert task["status"] == "Pending" and task["task_id"] == task["id"]
        assert task["input_params"] == {"input": "Hello"} and task["task_type"] == "text-generation"
        second = http.post("/api/v1/tasks", json={**body, "input": "Again"}, headers=client).json()

        agent = HttpAgent.register(http, token="llm-ops-key-123", hostname="gpu-1")
        assert agent.lease(max_tasks=5) == []  # offline: the tasks wait
        online = http.put(f"/api/v1/models/{model['id']}/status", json={"status": "online"}, headers=ops)
        assert online.json()["status"] == "online"
        leased = agent.lease(max_tasks=5)
        assert [t["task_id"] for t in leased] == [task["id"]]  # max_workers 1
        assert agent.report(leased[0], "succeeded", result={"text": "Hi"}).status_code == 200
        done = http.get(f"/api/v1/tasks/{task['id']}", headers=client).json()
        assert done["status"] == "Completed" and done["result"] == {"text": "Hi"}
        assert http.get(f"/api/v1/tasks/{task['id']}", headers=ops).json()["status"] == "succeeded"
        assert [t["task_id"] for t in agent.lease(max_tasks=5)] == [second["id"]]

        unknown = http.post("/api/v1/tasks", json={**body, "model_id": 999}, headers=client)
        assert unknown.status_code == 404 and "service 999 not found" in unknown.json()["error"]
        assert http.get("/api/v1/models/abc", headers=ops).json()["field"] == "model"
        assert http.get("/api/v1/system/health").json()["status"] == "ok"
