"""No one gets in: every route against every kind of credential, agents confined to their own attempts,
cross-origin calls refused, exposure refused without keys, shell tasks where they are not allowed, and no
secret in logs, in what the console reads, or in /api/v1/health."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.api.app import ENDPOINTS
from tests.faults.cluster import Cluster
from tests.faults.processes import ROOT, Coordinator, Stores, clean_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

SECRETS = {name: f"{name}-{uuid.uuid4().hex}" for name in
           ("operator", "read", "submit", "enroll", "redis_password", "pg_password")}
"""Every secret this module configures (each unique, so finding one anywhere is unambiguous)."""
CREDENTIALS = ("none", "wrong", "read", "submit", "operator", "enroll", "own worker", "other worker")
"""The columns of the table: no key, an unknown key, the three client roles, the agent enrollment token, the
token of the worker the route names, and another worker's token."""

OK, UNAUTHENTICATED, FORBIDDEN = "ok", 401, 403
EXPECTED_BY_ACCESS: dict[str, dict[str, str | int]] = {
    "public": dict.fromkeys(CREDENTIALS, OK),
    "read": {"none": 401, "wrong": 401, "read": OK, "submit": OK, "operator": OK, "enroll": 401,
             "own worker": 401, "other worker": 401},
    "submit": {"none": 401, "wrong": 401, "read": 403, "submit": OK, "operator": OK, "enroll": 401,
               "own worker": 401, "other worker": 401},
    "operator": {"none": 401, "wrong": 401, "read": 403, "submit": 403, "operator": OK, "enroll": 401,
                 "own worker": 401, "other worker": 401},
    "enroll": {"none": 401, "wrong": 401, "read": 403, "submit": 403, "operator": OK, "enroll": OK,
               "own worker": 401, "other worker": 401},
    "worker": {"none": 401, "wrong": 401, "read": 401, "submit": 401, "operator": 401, "enroll": 401,
               "own worker": OK, "other worker": 401},
    "worker or operator": {"none": 401, "wrong": 401, "read": 403, "submit": 403, "operator": OK, "enroll": 401,
                           "own worker": OK, "other worker": 401},
    "worker or read": {"none": 401, "wrong": 401, "read": OK, "submit": OK, "operator": OK, "enroll": 401,
                       "own worker": OK, "other worker": 401},
}
"""What each kind of route lets each credential do: OK (anything but 401/403), or the refusal expected."""

ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/tasks"): "submit",
    ("GET", "/api/v1/tasks"): "read",
    ("GET", "/api/v1/tasks/stats"): "read",
    ("GET", "/api/v1/tasks/{task_id}"): "read",
    ("GET", "/api/v1/tasks/{task_id}/logs"): "read",
    ("GET", "/api/v1/tasks/{task_id}/timeline"): "read",
    ("DELETE", "/api/v1/tasks/{task_id}"): "operator",
    ("POST", "/api/v1/tasks/{task_id}/retry"): "operator",
    ("POST", "/api/v1/tasks/{task_id}/requeue"): "operator",
    ("POST", "/api/v1/tasks/bulk/cancel"): "operator",
    ("POST", "/api/v1/tasks/bulk/retry"): "operator",
    ("POST", "/api/v1/tasks/bulk/requeue"): "operator",
    ("POST", "/api/v1/workers/register"): "enroll",
    ("POST", "/api/v1/workers/{worker_id}/heartbeat"): "worker",
    ("POST", "/api/v1/workers/{worker_id}/lease"): "worker",
    ("POST", "/api/v1/workers/{worker_id}/reports"): "worker",
    ("DELETE", "/api/v1/workers/{worker_id}"): "worker or operator",
    ("GET", "/api/v1/workers"): "read",
    ("GET", "/api/v1/workers/stats"): "read",
    ("GET", "/api/v1/workers/{worker_id}"): "read",
    ("POST", "/api/v1/workers/{worker_id}/commands"): "operator",
    ("GET", "/api/v1/workers/{worker_id}/commands"): "worker or read",
    ("DELETE", "/api/v1/workers/{worker_id}/commands"): "worker or operator",
    ("POST", "/api/v1/workers/{worker_id}/remove"): "operator",
    ("POST", "/api/v1/workers/broadcast"): "operator",
    ("GET", "/api/v1/health"): "public",
    ("GET", "/api/v1/stats/dashboard"): "read",
    ("GET", "/api/v1/stats/queues"): "read",
    ("GET", "/api/v1/stats/tasks/date"): "read",
    ("GET", "/api/v1/batches"): "read",
    ("GET", "/api/v1/audit"): "read",
    ("GET", "/metrics"): "read",
    ("GET", "/api/v1/tasks/{task_id}/files"): "read",
    ("GET", "/api/v1/workers/{worker_id}/attempts/{attempt_id}/files"): "worker",
    ("PUT", "/api/v1/workers/{worker_id}/attempts/{attempt_id}/outputs/{path:path}"): "worker",
    ("GET", "/api/v1/files/{key:path}"): "public",
    ("POST", "/api/v1/tasks/upload"): "submit",
    ("POST", "/api/v1/workers/heartbeat"): "enroll",
    ("GET", "/api/v1/services"): "read",
    ("GET", "/api/v1/services/{service}"): "read",
    ("PUT", "/api/v1/services/{service}"): "operator",
    ("POST", "/api/v1/services/{service}/pause"): "operator",
    ("POST", "/api/v1/services/{service}/resume"): "operator",
    ("GET", "/api/v1/batches/{batch_id}"): "read",
    ("GET", "/api/v1/batches/{batch_id}/results"): "read",
    ("GET", "/livez"): "public",
    ("GET", "/readyz"): "public",
    ("POST", "/api/v1/models"): "operator",
    ("GET", "/api/v1/models"): "read",
    ("GET", "/api/v1/models/{model}"): "read",
    ("PUT", "/api/v1/models/{model}/status"): "operator",
    ("GET", "/api/v1/system/health"): "public",
    ("POST", "/api/v1/tasks_json"): "submit",
    ("POST", "/api/v1/tasks_form"): "submit",
    ("GET", "/health"): "public",
}
"""Every route with who may call it, as the README documents it (not read from the code)."""


def task(**fields: Any) -> dict[str, Any]:
    return {"service": "sec", "task_type": "noop", "name": "security", **fields}


@dataclass
class World:
    """A keyed coordinator with two enrolled workers, A holding a running attempt, and a task with a file."""

    system: Cluster
    coordinator: Coordinator
    worker_a: dict[str, str]
    worker_b: dict[str, str]
    attempt: dict[str, Any]
    task_id: str
    file_key: str
    file_query: str

    def token(self, credential: str, own: dict[str, str] | None = None) -> str | None:
        """The bearer token of a credential (`own`: the worker the route names, A unless told otherwise)."""
        return {"none": None, "wrong": f"wrong-{uuid.uuid4().hex}", "read": SECRETS["read"],
                "submit": SECRETS["submit"], "operator": SECRETS["operator"], "enroll": SECRETS["enroll"],
                "own worker": (own or self.worker_a)["token"], "other worker": self.worker_b["token"]}[credential]

    def client(self, credential: str = "operator", own: dict[str, str] | None = None) -> httpx.Client:
        token = self.token(credential, own)
        return httpx.Client(base_url=self.coordinator.url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"} if token else {})

    def enroll(self, hostname: str) -> dict[str, str]:
        """Register a worker with the enrollment token; its id and token."""
        reply = httpx.post(f"{self.coordinator.url}/api/v1/workers/register", json={"hostname": hostname},
                           headers={"Authorization": f"Bearer {SECRETS['enroll']}"}, timeout=30)
        reply.raise_for_status()
        return {"id": reply.json()["id"], "token": reply.json()["token"]}


@pytest.fixture(scope="module")
def locked(stores: Stores) -> Stores:
    """The module's stores with a Redis password (so the suite can look for it where it must not be)."""
    with stores.redis() as redis:
        redis.config_set("requirepass", SECRETS["redis_password"])
    return stores


def keyed_settings(system: Cluster) -> dict[str, str]:
    """Settings with API keys of every role, an enrollment token, and passwords in both store URLs."""
    redis_url = system.settings["AIDD_REDIS_URL"].replace("unix://", f"unix://:{SECRETS['redis_password']}@", 1)
    database_url = system.settings["AIDD_DATABASE_URL"].replace("postgres@", f"postgres:{SECRETS['pg_password']}@", 1)
    return {"AIDD_API_KEYS": f"op:operator:{SECRETS['operator']},ro:read:{SECRETS['read']},"
                             f"pipe:submit:{SECRETS['submit']}",
            "AIDD_AGENT_TOKEN": SECRETS["enroll"], "AIDD_REDIS_URL": redis_url, "AIDD_DATABASE_URL": database_url,
            "AIDD_HEARTBEAT_TIMEOUT": "600"}  # the scripted workers A and B never heartbeat: keep them


@pytest.fixture(scope="module")
def world(locked: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    system = Cluster(locked, tmp_path_factory.mktemp("security"))
    try:
        system.settings.update(keyed_settings(system))
        system.key = SECRETS["operator"]
        coordinator = system.coordinator()
        enroll = {"Authorization": f"Bearer {SECRETS['enroll']}"}
        with httpx.Client(base_url=coordinator.url, timeout=30) as http:
            a, b = (http.post("/api/v1/workers/register", json={"hostname": name}, headers=enroll).json()
                    for name in ("worker-a", "worker-b"))
            operator = {"Authorization": f"Bearer {SECRETS['operator']}"}
            http.post("/api/v1/workers/broadcast", json={"command": "resume"}, headers=operator).raise_for_status()
            http.post("/api/v1/tasks", json=task(), headers=operator).raise_for_status()
            [attempt] = http.post(f"/api/v1/workers/{a['id']}/lease", json={"max_tasks": 1},
                                  headers={"Authorization": f"Bearer {a['token']}"}).json()["tasks"]
            with_file = http.post("/api/v1/tasks", headers=operator, data={"task": json.dumps(task(name="file"))},
                                  files=[("files", ("input.smi", b"CCO\n"))])
            with_file.raise_for_status()
            listing = http.get(f"/api/v1/tasks/{with_file.json()['id']}/files", headers=operator).json()
        url = httpx.URL(listing["inputs"][0]["url"])
        yield World(system, coordinator, a, b, attempt, with_file.json()["id"], listing["inputs"][0]["key"],
                    url.query.decode())
    finally:
        system.close()


def call(world: World, method: str, path: str, credential: str) -> int:
    """Call one route with one credential (the route's ids filled in, a valid body); its status code.

    The route naming a worker names A, except the graceful stop, which gets a worker of its own each time (so A
    keeps its attempt for the other calls)."""
    own = world.enroll("leaving") if (method, path) == ("DELETE", "/api/v1/workers/{worker_id}") else world.worker_a
    filled = (path.replace("{task_id}", world.task_id).replace("{worker_id}", own["id"])
              .replace("{attempt_id}", world.attempt["attempt_id"]).replace("{path:path}", "out.txt")
              .replace("{key:path}", world.file_key).replace("{service}", "security-probe")
              .replace("{model}", "security-probe").replace("{batch_id}", world.task_id))  # no such batch: 404
    if path == "/api/v1/files/{key:path}":
        filled += f"?{world.file_query}"
    bodies: dict[str, Any] = {
        "/api/v1/tasks": task(), "/api/v1/workers/register": {"hostname": "late"},
        "/api/v1/workers/{worker_id}/heartbeat": {"current_tasks": [world.attempt["task_id"]]},
        "/api/v1/workers/{worker_id}/lease": {"max_tasks": 0},
        "/api/v1/workers/{worker_id}/reports": {"events": [{"task_id": world.attempt["task_id"],
                                                            "attempt_id": world.attempt["attempt_id"],
                                                            "event": "progress", "progress": 0.5}]},
        "/api/v1/workers/{worker_id}/commands": {"command": "resume"} if method == "POST" else {"ids": [1]},
        "/api/v1/workers/broadcast": {"command": "resume"},
    }
    if path.startswith("/api/v1/tasks/bulk/"):
        bodies[path] = {"ids": [world.task_id]}
    with world.client(credential, own) as http:
        if method == "PUT":
            response = http.put(filled, content=b"output")
        else:
            response = http.request(method, filled, json=bodies.get(path) if method != "GET" else None)
    return response.status_code


def test_every_route_against_every_credential(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The whole table: each route by each credential gets what the README says, never a 5xx."""
    assert {(e.method, e.path) for e in ENDPOINTS} == set(ROUTES), "a route the table does not know"
    observed = {(method, path): {c: call(world, method, path, c) for c in CREDENTIALS} for method, path in ROUTES}
    rows, wrong = [], []
    for (method, path), statuses in observed.items():
        expected = EXPECTED_BY_ACCESS[ROUTES[method, path]]
        for credential, status in statuses.items():
            allowed = status not in (UNAUTHENTICATED, FORBIDDEN)
            if status >= 500 or (expected[credential] == OK) != allowed or (
                    not allowed and expected[credential] != status):
                wrong.append(f"{method} {path} with {credential}: {status}, expected {expected[credential]}")
        rows.append(f"{method:6} {path:72} " + " ".join(f"{statuses[c]:>5}" for c in CREDENTIALS))
    header = f"{'':6} {'':72} " + " ".join(f"{c[:5]:>5}" for c in CREDENTIALS)
    print("\n".join([header, *rows]))
    (tmp_path_factory.getbasetemp() / "security-table.json").write_text(json.dumps(
        [{"method": m, "path": p, "access": ROUTES[m, p], **s} for (m, p), s in observed.items()], indent=2))
    assert wrong == [], "\n".join(wrong)


def test_an_agent_cannot_act_on_another_agents_attempt(world: World) -> None:
    """Worker B, with its own valid token, reports on, asks for the files of, and claims A's attempt: refused;
    A's attempt is untouched."""
    b, attempt = world.worker_b, world.attempt
    events = [{"task_id": attempt["task_id"], "attempt_id": attempt["attempt_id"], "event": event,
               **({"result": {"stolen": True}} if event == "succeeded" else {"reason": "permanent"})}
              for event in ("succeeded", "failed")]
    with world.client("other worker") as http:
        for event in events:
            reply = http.post(f"/api/v1/workers/{b['id']}/reports", json={"events": [event]})
            assert reply.status_code == 409 and reply.json()["results"][0]["status"] == 409
        files = http.get(f"/api/v1/workers/{b['id']}/attempts/{attempt['attempt_id']}/files")
        assert files.status_code == 409
        beat = http.post(f"/api/v1/workers/{b['id']}/heartbeat", json={"current_tasks": [attempt["task_id"]]})
        assert attempt["task_id"] in beat.json()["stale_tasks"]  # B is told to kill it, A keeps it
    with world.client() as http:
        held = http.get(f"/api/v1/tasks/{attempt['task_id']}").json()
    assert held["worker_id"] == world.worker_a["id"] and held["attempt_id"] == attempt["attempt_id"]


def test_cross_origin_and_foreign_hosts_are_refused(world: World) -> None:
    """A mutating call from another site's page (Origin) is refused even with a valid key; so is any call for
    a host name this coordinator does not serve (DNS rebinding); the same call from its own origin passes."""
    with world.client() as http:
        assert http.post("/api/v1/tasks", json=task(), headers={"Origin": "http://evil.example"}).status_code == 403
        assert http.delete(f"/api/v1/tasks/{world.task_id}",
                           headers={"Origin": "https://evil.example"}).status_code == 403
        assert http.get("/api/v1/tasks", headers={"Host": "evil.example"}).status_code == 421
        own = http.post("/api/v1/tasks", json=task(), headers={"Origin": world.coordinator.url})
        assert own.status_code == 201


def serve(host: str, settings: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `aidd --serve --host HOST` until it exits or 20 s pass (stores configured: none are started)."""
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    env = clean_env({"AIDD_CONFIG": str(config), "AIDD_STATE_DIR": str(tmp_path / "state"), **settings})
    return subprocess.run([sys.executable, "-m", "aiddclient.cli", "--serve", "--host", host, "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)


def test_serving_beyond_loopback_needs_keys(world: World, tmp_path: Path) -> None:
    """`--serve` on a non-loopback address without API keys, or without an agent token, refuses to start, with
    one line naming the setting."""
    stores = {k: world.system.settings[k] for k in ("AIDD_REDIS_URL", "AIDD_DATABASE_URL")}
    for settings, needle in (({}, "without api_keys"),
                             ({"AIDD_API_KEYS": f"op:operator:{SECRETS['operator']}"}, "without agent_token")):
        done = serve("0.0.0.0", {**stores, **settings}, tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [f"aidd: host: refusing to serve on 0.0.0.0 {needle} "
                                                    f"(set AIDD_{needle.split()[-1].upper()})"], done.stderr
        assert SECRETS["operator"] not in done.stderr + done.stdout


def test_shell_tasks_where_they_are_not_allowed(world: World) -> None:
    """allow_shell_tasks false: a shell task is refused (422), alone, in a batch (nothing created) or with files;
    shell_requires_operator: the submit key is refused (403), the operator key accepted."""
    shell = task(task_type="shell", input_params={"argv": ["true"]})
    system = world.system
    disabled = system.coordinator("no-shell", AIDD_ALLOW_SHELL_TASKS="false")
    operator_only = system.coordinator("operator-shell", AIDD_SHELL_REQUIRES_OPERATOR="true")
    headers = {"Authorization": f"Bearer {SECRETS['operator']}"}
    with httpx.Client(base_url=disabled.url, timeout=30, headers=headers) as http:
        before = http.get("/api/v1/tasks/stats").json()
        alone = http.post("/api/v1/tasks", json=shell)
        batch = http.post("/api/v1/tasks", json={"tasks": [task(), shell]})
        form = http.post("/api/v1/tasks", data={"task": json.dumps(shell)}, files=[("files", ("a.txt", b"a"))])
        assert (alone.status_code, batch.status_code, form.status_code) == (422, 422, 422)
        assert "shell tasks are disabled" in alone.json()["error"] and batch.json()["field"].startswith("tasks[1]")
        assert http.get("/api/v1/tasks/stats").json() == before  # nothing half-created
    with httpx.Client(base_url=operator_only.url, timeout=30) as http:
        as_submit = http.post("/api/v1/tasks", json=shell, headers={"Authorization": f"Bearer {SECRETS['submit']}"})
        assert as_submit.status_code == 403 and "operator" in as_submit.json()["error"]
        assert http.post("/api/v1/tasks", json=shell, headers=headers).status_code == 201


def test_no_secret_in_logs_console_data_or_health(world: World) -> None:
    """After everything above — and a real agent that enrolled with the token and ran a task printing its
    environment — no key, token or password appears in any log, in any answer the console reads (every GET
    route, with the operator key), nor in /api/v1/health."""
    system = world.system
    agent = system.agent("secret-agent", 2, env={"AIDD_AGENT_TOKEN": SECRETS["enroll"]})
    with world.client() as http:
        shown = http.post("/api/v1/tasks", json=task(task_type="shell", input_params={"argv": ["env"]}))
        assert shown.status_code == 201
        wait_until(lambda: http.get(f"/api/v1/tasks/{shown.json()['id']}").json()["status"] == "succeeded", 30,
             "the env task to finish")
        answers = [http.get(path).text for path in readable_paths(world)]
        answers.append(http.get(f"/api/v1/tasks/{shown.json()['id']}/logs").text)
    health = httpx.get(f"{world.coordinator.url}/api/v1/health").text
    assert "PATH=" in answers[-1]  # the task did print its environment
    files_key = (Path(system.settings["AIDD_STATE_DIR"]) / "files.key").read_bytes().hex()
    secrets = {**SECRETS, "worker A token": world.worker_a["token"], "worker B token": world.worker_b["token"]}
    places = {"coordinator logs": "\n".join(c.output for c in system.coordinators), "agent log": agent.output,
              "console data": "\n".join(answers), "health": health}
    found = [f"{name} in {place}" for place, text in places.items() for name, secret in secrets.items()
             if secret in text]
    found += [f"the files signing key in {place}" for place, text in places.items() if files_key in text]
    found += [f"token_hash in {place}" for place, text in places.items() if re.search(r"token_hash", text)]
    assert found == [], found
    assert json.loads(health)["status"] == "ok"


def readable_paths(world: World) -> list[str]:
    """Every GET route, its ids filled in (what the console, or anyone with a read key, can see)."""
    paths = [e.path.replace("{task_id}", world.task_id).replace("{worker_id}", world.worker_a["id"])
             for e in ENDPOINTS if e.method == "GET" and "{attempt_id}" not in e.path and "{key:path}" not in e.path]
    return [*paths, "/api/v1/openapi.json"]
