"""Operator actions over HTTP: cancel / retry / requeue in every state, bulk by ids and by filter, the audit."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from coordinator.server import BackgroundServer
from coordinator.states import Action, TaskStatus
from tests.helpers import Driven, drive_all, drive_to
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body

ALLOWED: dict[Action, dict[TaskStatus, TaskStatus]] = {
    Action.CANCEL: {TaskStatus.PENDING: TaskStatus.CANCELLED, TaskStatus.RUNNING: TaskStatus.CANCELLED},
    Action.RETRY: {s: TaskStatus.PENDING for s in TaskStatus if s.finished},
    Action.REQUEUE: {TaskStatus.RUNNING: TaskStatus.PENDING},
}
"""What each action does from each state it is allowed in; every other state answers 409. (Requeue also
moves a pending task that waits out a retry backoff; a plain queued one is already where it would go.)"""

ENDS_ATTEMPT_AS = {Action.CANCEL: "cancelled", Action.REQUEUE: "requeued"}


def act(client: httpx.Client, action: Action, task_id: str) -> httpx.Response:
    """One action on one task, through its own route."""
    if action == Action.CANCEL:
        return client.delete(f"/api/v1/tasks/{task_id}")
    return client.post(f"/api/v1/tasks/{task_id}/{action.value}")


def bulk(client: httpx.Client, action: Action, **selector: Any) -> httpx.Response:
    return client.post(f"/api/v1/tasks/bulk/{action.value}", json=selector)


def get(client: httpx.Client, task_id: str) -> dict[str, Any]:
    reply = client.get(f"/api/v1/tasks/{task_id}")
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def commands_of(client: httpx.Client, driven: Driven) -> list[dict[str, Any]]:
    return list(client.get(f"/api/v1/workers/{driven.agent.id}/commands").json()["items"])


def drive(server: BackgroundServer, status: TaskStatus, **fields: Any) -> Driven:
    """A task in `status`, made on the server's own coordinator (as agents and clients would)."""
    return server.call(lambda: drive_to(server.coordinator, status, **fields))


@pytest.mark.parametrize("status", list(TaskStatus))
@pytest.mark.parametrize("action", list(Action))
def test_action_in_every_state(api_server: BackgroundServer, client: httpx.Client, action: Action,
                               status: TaskStatus) -> None:
    """Allowed actions move the task (a running one also ends its attempt and tells its worker to kill it);
    the others answer 409 with a message naming the action and the state, and change nothing."""
    driven = drive(api_server, status)
    before = get(client, driven.task_id)
    reply = act(client, action, driven.task_id)
    after = get(client, driven.task_id)
    if status not in ALLOWED[action]:
        assert reply.status_code == 409
        message = reply.json()["error"]
        assert f"cannot {action.value}" in message and status.value in message and driven.task_id in message
        assert after == before
        return
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == after["status"] == ALLOWED[action][status]
    attempts = after["attempt_history"]
    if status == TaskStatus.RUNNING:
        assert driven.leased is not None
        assert attempts[-1]["end_reason"] == ENDS_ATTEMPT_AS[action] and attempts[-1]["ended_at"] is not None
        [command] = commands_of(client, driven)
        assert command["command"] == "cancel-task"
        assert command["args"] == {"task_id": driven.task_id, "attempt_id": driven.leased["attempt_id"]}
    else:
        assert commands_of(client, driven) == []
        assert attempts == before["attempt_history"]
    if action == Action.RETRY:
        assert (after["retry_count"], after["error"], after["result"], after["finished_at"]) == (0, None, None, None)
    if after["status"] == TaskStatus.PENDING:  # back in the queue: its worker can lease it again, once a running
        agent = HttpAgent(client, str(driven.agent.id), driven.agent.token)  # attempt's process is confirmed gone
        if status == TaskStatus.RUNNING:
            assert agent.lease() == []
            assert agent.confirm_stopped() == 1
        [again] = agent.lease()
        assert again["task_id"] == driven.task_id and again["attempt"] == before["attempts"] + 1


@pytest.mark.parametrize("action", list(Action))
def test_unknown_or_malformed_id(client: httpx.Client, action: Action) -> None:
    """An id no task has is 404; something that is not a UUID is 422 naming task_id."""
    missing = str(uuid.uuid4())
    reply = act(client, action, missing)
    assert reply.status_code == 404 and missing in reply.json()["error"]
    malformed = act(client, action, "not-a-uuid")
    assert malformed.status_code == 422 and malformed.json()["field"] == "task_id"


def test_requeue_of_a_backing_off_task_makes_it_due_now(api_server: BackgroundServer, client: httpx.Client) -> None:
    """A pending task waiting out a retry backoff is requeued to run now."""
    driven = drive(api_server, TaskStatus.RUNNING, max_retries=3)
    agent = HttpAgent(client, str(driven.agent.id), driven.agent.token)
    assert driven.leased is not None
    assert agent.report(driven.leased, "failed", error="exit 1").status_code == 200
    assert get(client, driven.task_id)["available_at"] is not None
    assert agent.lease() == []
    assert act(client, Action.REQUEUE, driven.task_id).status_code == 200
    assert get(client, driven.task_id)["available_at"] is None
    assert [t["task_id"] for t in agent.lease()] == [driven.task_id]


def test_an_action_aimed_at_one_attempt_never_hits_the_next(api_server: BackgroundServer,
                                                          client: httpx.Client) -> None:
    """With ?attempt_id= the operator's requeue or cancel applies only while that attempt is current: a
    second press after the task moved on to a new attempt answers 409 and changes nothing."""
    driven = drive(api_server, TaskStatus.RUNNING)
    assert driven.leased is not None
    first = driven.leased["attempt_id"]
    assert client.post(f"/api/v1/tasks/{driven.task_id}/requeue?attempt_id={first}").status_code == 200
    agent = HttpAgent(client, str(driven.agent.id), driven.agent.token)
    agent.confirm_stopped()
    [again] = agent.lease()
    late = client.delete(f"/api/v1/tasks/{driven.task_id}?attempt_id={first}")
    assert late.status_code == 409 and first in late.json()["error"]
    assert get(client, driven.task_id)["status"] == "running"
    assert client.delete(f"/api/v1/tasks/{driven.task_id}?attempt_id={again['attempt_id']}").status_code == 200


@pytest.mark.parametrize("action", list(Action))
def test_bulk_by_ids_changes_only_the_tasks_it_may(api_server: BackgroundServer, client: httpx.Client,
                                                   action: Action) -> None:
    """A bulk action over tasks in every state (and an unknown id) changes those it is allowed on, skips the rest."""
    tasks = api_server.call(lambda: drive_all(api_server.coordinator))
    ids = [d.task_id for d in tasks.values()]
    reply = bulk(client, action, ids=[*ids, str(uuid.uuid4())])
    assert reply.status_code == 200, reply.text
    allowed = ALLOWED[action]
    body = reply.json()
    assert (body["changed"], body["skipped"]) == (len(allowed), len(ids) + 1 - len(allowed))
    assert sorted(body["ids"]) == sorted(tasks[s].task_id for s in allowed)
    statuses = {s: get(client, d.task_id)["status"] for s, d in tasks.items()}
    assert statuses == {s: allowed.get(s, s).value for s in TaskStatus}


def test_bulk_by_filter_moves_exactly_the_matching_tasks(api_server: BackgroundServer, client: httpx.Client) -> None:
    """Requeue with filter {service: docking, status: running} moves the running docking tasks and nothing else."""
    docking_running = [drive(api_server, TaskStatus.RUNNING, service="docking") for _ in range(2)]
    others = [drive(api_server, TaskStatus.RUNNING, service="admet"),
              drive(api_server, TaskStatus.PENDING, service="docking"),
              drive(api_server, TaskStatus.SUCCEEDED, service="docking")]
    before = {d.task_id: get(client, d.task_id) for d in others}
    reply = bulk(client, Action.REQUEUE, filter={"service": ["docking"], "status": ["running"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["changed"] == 2 and reply.json()["skipped"] == 0
    assert sorted(reply.json()["ids"]) == sorted(d.task_id for d in docking_running)
    for d in docking_running:
        view = get(client, d.task_id)
        assert view["status"] == "pending" and view["attempt_history"][-1]["end_reason"] == "requeued"
    assert {d.task_id: get(client, d.task_id) for d in others} == before


def test_bulk_filter_by_batch_and_text(api_server: BackgroundServer, client: httpx.Client) -> None:
    """A filter on batch_id and on text in the name cancels only that batch's matching tasks."""
    batch = client.post("/api/v1/tasks", json={"name": "screen", "tasks": [
        {"service": "admet", "task_type": "qikprop", "name": "aspirin"},
        {"service": "admet", "task_type": "qikprop", "name": "ethanol"}]}).json()
    outside = client.post("/api/v1/tasks", json={"service": "admet", "task_type": "qikprop",
                                                 "name": "aspirin again"}).json()
    reply = bulk(client, Action.CANCEL, filter={"batch_id": batch["batch_id"], "search": "ASPIRIN"})
    assert reply.json()["ids"] == [batch["ids"][0]]
    assert [get(client, i)["status"] for i in [*batch["ids"], outside["id"]]] == ["cancelled", "pending", "pending"]


@pytest.mark.parametrize("selector", [{"filter": {}}, {"filter": {"status": []}}, {}, {"ids": [], "filter": {}}])
def test_bulk_needs_a_selector_and_all_for_an_empty_filter(client: httpx.Client, selector: dict[str, Any]) -> None:
    """An empty filter without "all": true is refused (422), as is a body naming neither or both selectors."""
    client.post("/api/v1/tasks", json={"service": "admet", "task_type": "qikprop"})
    reply = bulk(client, Action.CANCEL, **selector)
    assert reply.status_code == 422
    assert client.get("/api/v1/tasks", params={"status": "pending"}).json()["total"] == 1


def test_bulk_with_all_means_every_task(client: httpx.Client) -> None:
    """An empty filter with "all": true cancels every task that can be cancelled."""
    for _ in range(3):
        client.post("/api/v1/tasks", json={"service": "admet", "task_type": "qikprop"})
    reply = bulk(client, Action.CANCEL, filter={}, all=True)
    assert reply.status_code == 200 and reply.json()["changed"] == 3
    assert client.get("/api/v1/tasks", params={"status": "cancelled"}).json()["total"] == 3


@pytest.mark.parametrize(("action", "status"), [(Action.CANCEL, TaskStatus.RUNNING),
                                                (Action.RETRY, TaskStatus.FAILED),
                                                (Action.REQUEUE, TaskStatus.RUNNING)])
def test_repeating_an_action_changes_nothing_more(api_server: BackgroundServer, client: httpx.Client,
                                                  action: Action, status: TaskStatus) -> None:
    """A double key press: the second request leaves the task, its attempts and its worker's commands alone."""
    driven = drive(api_server, status)
    assert act(client, action, driven.task_id).status_code == 200
    once = get(client, driven.task_id)
    commands = commands_of(client, driven)
    second = act(client, action, driven.task_id)
    twice = get(client, driven.task_id)
    assert second.status_code in (200, 409)
    assert {k: v for k, v in twice.items() if k != "updated_at"} == {k: v for k, v in once.items()
                                                                      if k != "updated_at"}
    assert commands_of(client, driven) == commands
    repeat = bulk(client, action, ids=[driven.task_id])
    assert repeat.status_code == 200, repeat.text
    if action != Action.REQUEUE:
        assert repeat.json()["changed"] == 0 and repeat.json()["skipped"] == 1


def test_operator_actions_are_audited(api_server: BackgroundServer, client: httpx.Client) -> None:
    """Every action is in GET /api/v1/audit: who, what, on what, how many (newest first)."""
    running = drive(api_server, TaskStatus.RUNNING)
    other = drive(api_server, TaskStatus.RUNNING)
    act(client, Action.CANCEL, running.task_id)
    bulk(client, Action.REQUEUE, ids=[other.task_id, running.task_id])
    client.post(f"/api/v1/workers/{running.agent.id}/commands", json={"command": "drain"})
    items = client.get("/api/v1/audit").json()["items"]
    summary = [(i["actor"], i["action"], i["target"], i["count"]) for i in items[:3]]
    assert summary == [("local", "worker.drain", str(running.agent.id), 1),
                       ("local", "task.requeue", "2 tasks", 1),
                       ("local", "task.cancel", running.task_id, 1)]
    assert items[1]["detail"] == {"skipped": 1}
    assert all(i["at"] for i in items)


def test_two_operators_at_once_change_a_task_once(api_server: BackgroundServer, client: httpx.Client) -> None:
    """Five simultaneous cancels of one running task: one 200, four 409, one attempt ended, one kill command."""
    driven = drive(api_server, TaskStatus.RUNNING)

    def cancel(_: int) -> int:
        with httpx.Client(base_url=api_server.url, timeout=30) as own:
            return act(own, Action.CANCEL, driven.task_id).status_code

    with ThreadPoolExecutor(max_workers=5) as pool:
        codes = sorted(pool.map(cancel, range(5)))
    assert codes == [200, 409, 409, 409, 409]
    assert len(commands_of(client, driven)) == 1
    assert [a["end_reason"] for a in get(client, driven.task_id)["attempt_history"]] == ["cancelled"]


def test_ids_may_be_given_as_unique_prefixes(client: httpx.Client) -> None:
    """A task's or worker's route takes a unique prefix of its id (as git does); an ambiguous one is 409 naming
    candidates, one no id starts with 404, one that cannot start an id 422; agents' own routes take full ids."""
    ids = [client.post("/api/v1/tasks", json=task_body()).json()["id"] for _ in range(40)]
    task_id = ids[0]
    for prefix in (task_id[:8], task_id[:13], task_id.replace("-", "")[:12].upper()):
        reply = client.get(f"/api/v1/tasks/{prefix}")
        assert reply.status_code == 200 and reply.json()["id"] == task_id, (prefix, reply.text)
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)  # 40 ids, 16 first digits
    ambiguous = client.get(f"/api/v1/tasks/{shared}")
    assert ambiguous.status_code == 409 and ambiguous.json()["field"] == "task_id"
    assert "several ids" in ambiguous.json()["error"]
    missing = next(p for p in (f"{d}{d}{d}{d}{d}{d}" for d in "0123456789abcdef") if not any(i.startswith(p)
                                                                                               for i in ids))
    assert client.get(f"/api/v1/tasks/{missing}").status_code == 404
    assert client.get("/api/v1/tasks/not-hex").status_code == 422
    assert client.delete(f"/api/v1/tasks/{task_id[:10]}").json()["status"] == "cancelled"
    agent = HttpAgent.register(client)
    assert client.get(f"/api/v1/workers/{agent.id[:10]}").json()["id"] == agent.id
    late = client.post(f"/api/v1/workers/{agent.id[:10]}/heartbeat", json={}, headers=agent.headers)
    assert late.status_code == 422 and late.json()["field"] == "worker_id"
