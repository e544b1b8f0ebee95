"""The HTTP API's edge: bad input is a 4xx naming the field (never a 500, never half a batch); legacy bodies
work unchanged; keys, roles, worker tokens, Origin and Host are enforced."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.api.app import ENDPOINTS
from coordinator.config import Settings
from coordinator.server import BackgroundServer
from tests.helpers import serving, wipe_index
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body

LIMITS = {"max_body_bytes": 4000, "max_batch_bytes": 40_000, "max_batch_tasks": 5}
KEYS = "operator:op-key-123456,read:read-key-123456,submit:sub-key-1234567"
AGENT_TOKEN = "agent-token-123456"


@pytest.fixture(scope="module")
def limited(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One keyless API with small request limits for the whole table (a key prefix of its own)."""
    redis_url, database_url = servers
    settings = Settings(state_dir=tmp_path_factory.mktemp("limited"), redis_url=redis_url,
                        database_url=database_url, key_prefix=f"t{uuid.uuid4().hex[:10]}")
    with serving(settings, **LIMITS) as (_server, client):
        yield client
    with SyncRedis.from_url(redis_url) as redis:
        wipe_index(redis, settings.key_prefix)


@pytest.fixture
def secured(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[tuple[BackgroundServer, httpx.Client]]:
    """An API with an operator, a read and a submit key and an agent token; the client sends no key."""
    with serving(settings, api_keys=KEYS, agent_token=AGENT_TOKEN) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Bad:
    """One bad request: what is sent and what must come back."""

    name: str
    body: Any
    status: int
    field: str | None = None
    path: str = "/api/v1/tasks"
    method: str = "POST"

    def send(self, client: httpx.Client, agent: HttpAgent) -> httpx.Response:
        path = self.path.format(worker=agent.id, task=uuid.uuid4())
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return client.request(self.method, path, content=content, headers={
            **agent.headers, "Content-Type": "application/json"})


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"x": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


BAD_INPUTS = [
    Bad("malformed json", b'{"service": "admet",', 400),
    Bad("not json", b"service=admet", 400),
    Bad("not utf-8", b'{"service": "\xff\xfe"}', 400),
    Bad("lone surrogate", b'{"service": "admet", "task_type": "q", "name": "\\ud800"}', 400),
    Bad("oversized task", task_body(input_params={"smiles": ["C" * 5000]}), 413),
    Bad("oversized batch body", [task_body(input_params={"smiles": ["C" * 9000]})] * 5, 413),
    Bad("batch over max_batch_tasks", [task_body()] * 6, 413),
    Bad("missing service", {"task_type": "qikprop"}, 422, "service"),
    Bad("missing task_type", {"service": "admet"}, 422, "task_type"),
    Bad("service not a string", {**task_body(), "service": 123}, 422, "service"),
    Bad("service with a colon", task_body(service="ad:met"), 422, "service"),
    Bad("group with a space", task_body(group="gpu nodes"), 422, "group"),
    Bad("priority not a number", task_body(priority="high"), 422, "priority"),
    Bad("priority fractional", task_body(priority=1.5), 422, "priority"),
    Bad("priority too high", task_body(priority=10_001), 422, "priority"),
    Bad("priority too low", task_body(priority=-10_001), 422, "priority"),
    Bad("priority huge", b'{"service": "a", "task_type": "b", "priority": 100000000000000000000000}', 422,
        "priority"),
    Bad("an integer orjson would read as a float", b'{"service": "a", "task_type": "b", "input_params": '
        b'{"big": 123456789012345678901234567890}}', 422, "input_params.big"),
    Bad("a negative one of 19 digits", b'{"service": "a", "task_type": "b", "input_params": {"n": [1, '
        b'-9223372036854775809]}}', 422, "input_params.n[1]"),
    Bad("input_params a list", task_body(input_params=["CCO"]), 422, "input_params"),
    Bad("labels a string", task_body(labels="gpu"), 422, "labels"),
    Bad("negative cpu", task_body(resources={"cpu": -1}), 422, "resources.cpu"),
    Bad("gpu 1.5", task_body(resources={"gpu": 1.5}), 422, "resources.gpu"),
    Bad("cpu 1e308 (no worker could ever run it)", task_body(resources={"cpu": 1e308}), 422, "resources.cpu"),
    Bad("more memory than any host", task_body(resources={"memory_gb": 1e7}), 422, "resources.memory_gb"),
    Bad("2000 GPUs", task_body(resources={"gpu": 2000}), 422, "resources.gpu"),
    Bad("unknown resource", task_body(resources={"tpu": 1}), 422, "resources.tpu"),
    Bad("retry on permanent", task_body(retry_on=["permanent"]), 422, "retry_on"),
    Bad("retry on nonsense", task_body(retry_on=["sometimes"]), 422, "retry_on[0]"),
    Bad("negative max_retries", task_body(max_retries=-1), 422, "max_retries"),
    Bad("zero timeout", task_body(timeout_s=0), 422, "timeout_s"),
    Bad("unknown field", task_body(colour="blue"), 422, "colour"),
    Bad("NUL in input_params", task_body(input_params={"smiles": ["C\u0000C"]}), 422, "input_params.smiles[0]"),
    Bad("NUL in a key", task_body(input_params={"smi\u0000les": "CCO"}), 422, "input_params.<key>"),
    Bad("NUL in name", task_body(name="as\u0000pirin"), 422, "name"),
    Bad("NUL in input_files", task_body(input_files=["a\u0000b"]), 422, "input_files[0]"),
    Bad("NUL in outputs", task_body(outputs=["out\u0000.sdf"]), 422, "outputs[0]"),
    Bad("too deeply nested", task_body(input_params=deep(40)), 422),
    Bad("body a string", "admet", 422, "body"),
    Bad("body null", None, 422, "body"),
    Bad("empty batch", {"tasks": []}, 422, "tasks"),
    Bad("batch task not an object", [task_body(), "CCO"], 422, "tasks[1]"),
    Bad("batch with a bad priority", [task_body(), task_body(), task_body(priority="x")], 422, "tasks[2].priority"),
    Bad("batch with a NUL", [task_body(), task_body(name="a\u0000")], 422, "tasks[1].name"),
    Bad("batch with a bad default", {"defaults": {"priority": "x"}, "tasks": [task_body()]}, 422,
        "tasks[0].priority"),
    Bad("batch into an unknown batch", {"batch_id": str(uuid.uuid4()), "tasks": [task_body()]}, 404),
    Bad("register without hostname", {"service": "admet"}, 422, "hostname", "/api/v1/workers/register"),
    Bad("register with a NUL", {"hostname": "node\u00001"}, 422, "body.hostname", "/api/v1/workers/register"),
    Bad("register bad gpu", {"hostname": "n", "gpus": [{"index": -1}]}, 422, "gpus[0].index",
        "/api/v1/workers/register"),
    Bad("heartbeat wrong type", {"used_cpu": "lots"}, 422, "used_cpu", "/api/v1/workers/{worker}/heartbeat"),
    Bad("heartbeat NUL in task detail", {"tasks": [{"task_id": "a\u0000"}]}, 422, "tasks[0].task_id",
        "/api/v1/workers/{worker}/heartbeat"),
    Bad("lease negative", {"max_tasks": -1}, 422, "max_tasks", "/api/v1/workers/{worker}/lease"),
    Bad("lease unknown field", {"max_task": 1}, 422, "max_task", "/api/v1/workers/{worker}/lease"),
    Bad("report bad task id", {"events": [{"task_id": "x", "attempt_id": str(uuid.uuid4()), "event": "log"}]},
        422, "events[0].task_id", "/api/v1/workers/{worker}/reports"),
    Bad("report unknown event", {"events": [{"task_id": str(uuid.uuid4()), "attempt_id": str(uuid.uuid4()),
                                             "event": "exploded"}]}, 422, "events[0].event",
        "/api/v1/workers/{worker}/reports"),
    Bad("unknown command", {"command": "explode"}, 422, "command", "/api/v1/workers/{worker}/commands"),
    Bad("command args with a NUL", {"command": "drain", "args": {"note": "a\u0000b"}}, 422, "args.note",
        "/api/v1/workers/{worker}/commands"),
    Bad("broadcast args with a NUL", {"command": "drain", "args": {"a\u0000": 1}}, 422, "args.<key>",
        "/api/v1/workers/broadcast"),
    Bad("ack ids not integers", b"", 422, "ids[0]", "/api/v1/workers/{worker}/commands?ids=x", "DELETE"),
    Bad("ack id negative", b"", 422, "ids[0]", "/api/v1/workers/{worker}/commands?ids=-1", "DELETE"),
    Bad("ack id beyond bigint", {"ids": [2**63]}, 422, "ids[0]", "/api/v1/workers/{worker}/commands", "DELETE"),
    Bad("register 10^10 cores", {"hostname": "n", "cpu_cores": 1e10}, 422, "cpu_cores", "/api/v1/workers/register"),
    Bad("lease gpu index huge", {"gpus": [{"index": 1e30, "free": 1}]}, 422, "gpus", "/api/v1/workers/{worker}/lease"),
    Bad("lease gpu memory negative", {"gpus": [{"index": 0, "memory_gb": -1}]}, 422, "gpus",
        "/api/v1/workers/{worker}/lease"),
    Bad("bulk ids not uuids", {"ids": ["x"]}, 422, "ids[0]", "/api/v1/tasks/bulk/cancel"),
    Bad("bulk filter unknown status", {"filter": {"status": ["done"]}}, 422, "filter.status[0]",
        "/api/v1/tasks/bulk/retry"),
    Bad("page zero", b"", 422, "page", "/api/v1/tasks?page=0", "GET"),
    Bad("page_size too big", b"", 422, "page_size", "/api/v1/tasks?page_size=5000", "GET"),
    Bad("unknown status filter", b"", 422, "status[0]", "/api/v1/tasks?status=done", "GET"),
    Bad("bad sort", b"", 422, "sort", "/api/v1/tasks?sort=password", "GET"),
    Bad("bad batch_id", b"", 422, "batch_id", "/api/v1/tasks?batch_id=42", "GET"),
    Bad("NUL in search", b"", 422, "search", "/api/v1/tasks?q=a%00b", "GET"),
    Bad("negative log offset", b"", 422, "after", "/api/v1/tasks/{task}/logs?after=-1", "GET"),
    Bad("bad days", b"", 422, "days", "/api/v1/stats/tasks/date?days=0", "GET"),
    Bad("unknown worker status filter", b"", 422, "status", "/api/v1/workers?status=gone", "GET"),
    Bad("task id neither a uuid nor a prefix of one", b"", 422, "task_id", "/api/v1/tasks/12z", "GET"),
    Bad("task id prefix no task has", b"", 404, None, "/api/v1/tasks/ffffffffffff", "GET"),
    Bad("unknown task", b"", 404, None, "/api/v1/tasks/{task}", "GET"),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.name for b in BAD_INPUTS])
def test_bad_input_is_refused_naming_the_field(limited: httpx.Client, bad: Bad) -> None:
    """Each bad request gets its 4xx with {"error", "field"}, and no task is stored."""
    agent = HttpAgent.register(limited)
    stored = limited.get("/api/v1/tasks").json()["total"]
    reply = bad.send(limited, agent)
    assert reply.status_code == bad.status, reply.text
    body = reply.json()
    assert isinstance(body["error"], str) and body["error"]
    if bad.field is not None:
        assert body.get("field") == bad.field, body
    assert limited.get("/api/v1/tasks").json()["total"] == stored


def test_batch_is_all_or_nothing(client: httpx.Client) -> None:
    """A batch whose fourth task is bad stores none of the five, creates no batch, and names tasks[3]."""
    tasks = [task_body(name=f"ok {i}") for i in range(5)]
    tasks[3]["resources"] = {"cpu": "many"}
    reply = client.post("/api/v1/tasks", json={"name": "screen", "tasks": tasks})
    assert reply.status_code == 422 and reply.json()["field"] == "tasks[3].resources.cpu"
    assert client.get("/api/v1/tasks").json()["total"] == 0
    assert client.get("/api/v1/batches").json()["items"] == []
    good = client.post("/api/v1/tasks", json={"name": "screen", "tasks": [task_body(name=f"ok {i}")
                                                                           for i in range(5)]})
    assert good.status_code == 201 and good.json()["count"] == 5


def test_nothing_is_ever_a_500(client: httpx.Client) -> None:
    """Every route, sent junk bodies of every shape, answers with a status below 500 and a JSON error."""
    agent = HttpAgent.register(client)
    task_id = client.post("/api/v1/tasks", json=task_body()).json()["id"]
    junk: list[bytes] = [b"", b"null", b"[]", b"1", b'"x"', b'{"a": 1}', b"{", b"\xff", b'{"ids": [1]}',
                         b'{"events": [{}]}', b'[{"service": 1}]']
    ids = {"worker_id": agent.id, "task_id": task_id, "attempt_id": str(uuid.uuid4())}
    goodbye = ("DELETE", "/api/v1/workers/{worker_id}")  # last: the worker is gone after it
    for endpoint in sorted(ENDPOINTS, key=lambda e: (e.method, e.path) == goodbye):
        path = re.sub(r"{(\w+)(?::\w+)?}", lambda m: ids.get(m.group(1), "x"), endpoint.path)
        for body in junk if endpoint.method != "GET" else [b""]:
            reply = client.request(endpoint.method, path, content=body, headers=agent.headers)
            not_ready = endpoint.path == "/readyz" and reply.status_code == 503  # the probe's answer: no leader
            assert reply.status_code < 500 or not_ready, (endpoint.method, path, body, reply.status_code, reply.text)


def test_an_exit_code_beyond_the_database_range_is_a_422(client: httpx.Client) -> None:
    """An exit code beyond PostgreSQL's integer range is bad input (422 naming the field), not a 503."""
    client.post("/api/v1/tasks", json={"service": "admet", "task_type": "qikprop"})
    agent = HttpAgent.register(client)
    [leased] = agent.lease()
    reply = agent.report(leased, "failed", exit_code=2**40, error="boom")
    assert reply.status_code == 422 and reply.json()["field"] == "events[0].exit_code"
    assert agent.report(leased, "failed", exit_code=1, error="boom").status_code == 200


def test_integers_keep_their_digits_or_are_refused(client: httpx.Client) -> None:
    """Integers at the ends of the 64-bit ranges (and long digit strings) are stored as sent; one beyond them, which
    orjson would read as a float, is a 422 naming its place, in a JSON body as in a file submission's task field."""
    params = {"max": 2**64 - 1, "min": -2**63, "id": "1" * 25, "x": 1e300}
    reply = client.post("/api/v1/tasks", json=task_body(input_params=params))
    assert reply.status_code == 201, reply.text
    assert client.get(f"/api/v1/tasks/{reply.json()['id']}").json()["input_params"] == params
    task = json.dumps(task_body(input_params={"big": 2**64})).encode()
    reply = client.post("/api/v1/tasks/upload", files={"task": (None, task)})
    assert reply.status_code == 422 and reply.json()["field"] == "task.input_params.big", reply.text
    assert "18446744073709551616 is beyond 64 bits" in reply.json()["error"]
    reply = client.post("/api/v1/tasks", json=[task_body(), task_body(input_params={"n": [1, {"m": -10**59}]})])
    assert reply.status_code == 422 and reply.json()["field"] == "[1].input_params.n[1].m", reply.text
    assert f"the integer {str(-10**59)[:30]}… (60 digits) is beyond 64 bits" in reply.json()["error"]


def test_legacy_bodies_work_unchanged(client: httpx.Client) -> None:
    """The SPEC's bodies from older clients: a task submit, a worker with only hostname and service, the flat
    heartbeat, DELETE of a worker and the paged task list."""
    submitted = client.post("/api/v1/tasks", json={
        "service": "admet", "task_type": "qikprop", "name": "ADMET prediction",
        "input_params": {"smiles": ["CCO", "CC(=O)OC1=CC=CC=C1C(=O)O"]}})
    assert submitted.status_code == 201
    task = submitted.json()
    assert uuid.UUID(task["id"]) and task["status"] == "pending" and task["priority"] == 2
    assert task["group"] == "default" and task["max_retries"] == 3 and task["timeout_s"] == 300
    agent = HttpAgent.register(client, hostname="legacy-host", service="admet")
    worker = client.get(f"/api/v1/workers/{agent.id}").json()
    assert (worker["services"], worker["groups"], worker["gpus"], worker["status"]) == (
        ["admet"], ["default"], [], "online")
    [leased] = agent.lease()
    assert leased["task_id"] == task["id"]
    beat = agent.post("heartbeat", {"used_cpu": 4, "used_memory_gb": 8.5, "used_gpu": 0, "used_gpu_memory_gb": 0,
                                    "current_tasks": [task["id"], "task-uuid-2"]})
    assert beat.status_code == 200
    assert beat.json()["stale_tasks"] == ["task-uuid-2"] and beat.json()["status"] == "online"
    listed = client.get("/api/v1/tasks?page=1&page_size=20&status=pending")
    assert listed.status_code == 200 and listed.json()["total"] == 0
    running = client.get("/api/v1/tasks?page=1&page_size=20&status=running").json()
    assert [t["id"] for t in running["items"]] == [task["id"]] and running["page_size"] == 20
    assert client.delete(f"/api/v1/workers/{agent.id}", headers=agent.headers).status_code == 200
    assert client.get(f"/api/v1/workers/{agent.id}").json()["status"] == "offline"
    assert client.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "pending"


def test_roles(secured: tuple[BackgroundServer, httpx.Client]) -> None:
    """No key: 401; read key: GET only (POST 403); submit key: submit but not cancel; operator: everything."""
    _server, client = secured
    read, submit, operator = bearer("read-key-123456"), bearer("sub-key-1234567"), bearer("op-key-123456")
    assert client.get("/api/v1/tasks").status_code == 401
    assert client.get("/api/v1/tasks", headers=bearer("not-a-key-at-all")).status_code == 401
    assert client.get("/api/v1/tasks", headers=read).status_code == 200
    assert client.get("/metrics", headers=read).status_code == 200
    assert client.post("/api/v1/tasks", json=task_body(), headers=read).status_code == 403
    created = client.post("/api/v1/tasks", json=task_body(), headers=submit)
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert client.get(f"/api/v1/tasks/{task_id}", headers=submit).status_code == 200
    refused = client.delete(f"/api/v1/tasks/{task_id}", headers=submit)
    assert refused.status_code == 403 and "submit" in refused.json()["error"]
    assert client.post("/api/v1/tasks/bulk/cancel", json={"ids": [task_id]}, headers=read).status_code == 403
    assert client.delete(f"/api/v1/tasks/{task_id}", headers=operator).status_code == 200
    assert client.post("/api/v1/workers/broadcast", json={"command": "drain"}, headers=submit).status_code == 403
    audit = client.get("/api/v1/audit", headers=read).json()["items"]
    assert [(a["actor"], a["action"]) for a in audit] == [("operator1", "task.cancel")]


def test_worker_tokens(secured: tuple[BackgroundServer, httpx.Client]) -> None:
    """Agents enroll with the agent token only; a worker token works for its own worker and no other."""
    _server, client = secured
    assert client.post("/api/v1/workers/register", json={"hostname": "n"}).status_code == 401
    assert client.post("/api/v1/workers/register", json={"hostname": "n"},
                       headers=bearer("read-key-123456")).status_code == 403
    one = HttpAgent.register(client, token=AGENT_TOKEN, hostname="one")
    two = HttpAgent.register(client, token=AGENT_TOKEN, hostname="two")
    assert one.post("heartbeat", {}).status_code == 200
    for what in ("heartbeat", "lease"):
        stolen = client.post(f"/api/v1/workers/{two.id}/{what}", json={}, headers=one.headers)
        assert stolen.status_code == 401
    assert client.post(f"/api/v1/workers/{one.id}/heartbeat", json={},
                       headers=bearer(AGENT_TOKEN)).status_code == 401
    assert client.delete(f"/api/v1/workers/{two.id}", headers=one.headers).status_code == 401
    assert client.get("/api/v1/tasks", headers=one.headers).status_code == 401  # not a client key
    assert client.delete(f"/api/v1/workers/{two.id}", headers=two.headers).status_code == 200


def test_origin_and_host_are_checked(secured: tuple[BackgroundServer, httpx.Client]) -> None:
    """A mutating call from a foreign Origin is 403 even with a valid key; a request for another Host is 421."""
    _server, client = secured
    operator = bearer("op-key-123456")
    evil = client.post("/api/v1/tasks", json=task_body(), headers={**operator, "Origin": "http://evil.example"})
    assert evil.status_code == 403 and "origin" in evil.json()["error"]
    same = client.post("/api/v1/tasks", json=task_body(),
                       headers={**operator, "Origin": f"http://127.0.0.1:{client.base_url.port}"})
    assert same.status_code == 201
    rebinding = client.get("/api/v1/tasks", headers={**operator, "Host": "evil.example"})
    assert rebinding.status_code == 421
    assert client.get("/api/v1/health", headers={"Host": "localhost"}).status_code == 200
    assert client.get("/api/v1/tasks", headers=operator).json()["total"] == 1


def test_health_is_public_and_tells_no_secret(secured: tuple[BackgroundServer, httpx.Client]) -> None:
    """GET /api/v1/health needs no key and shows no key, token, URL or path."""
    server, client = secured
    reply = client.get("/api/v1/health")
    assert reply.status_code == 200
    body = reply.json()
    assert (body["status"], body["redis"], body["postgres"]) == ("ok", "ok", "ok")
    settings = server.settings
    shown = reply.text
    assert "://" not in shown and str(settings.state_dir) not in shown
    for secret in ("op-key-123456", "read-key-123456", "sub-key-1234567", AGENT_TOKEN, settings.redis_url,
                   settings.database_url):
        assert secret and secret not in shown
