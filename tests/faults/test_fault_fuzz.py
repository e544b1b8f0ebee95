"""Schemathesis over the served OpenAPI document: every route, fuzzed with valid and invalid input under the
credential it needs (operator key, enrollment token, or the worker's own token), never answers 5xx.

The API runs for real (uvicorn on loopback, its lifespan starting the coordinator on the session's Redis and
PostgreSQL). Path parameters are mostly real ids (a registered worker, tasks in every state, current and stale
attempts), so calls get past authentication and lookups into the handlers; the rest are generated.
"""

from __future__ import annotations

import collections
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.schemas import OpenApiSchema

from coordinator.api.app import ENDPOINTS
from coordinator.api.auth import Access
from coordinator.api.routing import Endpoint
from coordinator.config import Settings
from coordinator.schemas import BulkAction
from tests.helpers import serving, wipe_index
from tests.support.agent import HttpAgent
from tests.support.tasks import task_body

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("AIDD_FUZZ_EXAMPLES", "30"))
"""Generated requests per route (valid and invalid input, about half each); more for a soak."""
OPERATOR_KEY, READ_KEY, AGENT_TOKEN = "fuzz-operator-key-1", "fuzz-read-key-1", "fuzz-agent-token-1"


def openapi_path(endpoint: Endpoint) -> str:
    """The route's path as the document writes it (Starlette's {name:path} is OpenAPI's {name})."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", endpoint.path)


@dataclass
class Target:
    """The served API, what the fuzzer may use of it, and what it got back."""

    url: str
    client: httpx.Client
    schema: OpenApiSchema
    agent: HttpAgent
    known: dict[str, list[str]] = field(default_factory=dict)
    """Real values of path parameters (worker_id, task_id, attempt_id, path, key), the most useful first."""
    attempts: dict[str, str] = field(default_factory=dict)
    """Task id of each known attempt id."""
    signed: dict[str, dict[str, str]] = field(default_factory=dict)
    """The query (expires, signature) of a valid download link, per stored file key."""
    statuses: dict[str, collections.Counter[int]] = field(default_factory=dict)

    def top_up(self) -> None:
        """Give the worker running attempts again (earlier routes may have cancelled, requeued or finished them)
        and bring it back online (an earlier route may have deregistered or drained it)."""
        operator = bearer(OPERATOR_KEY)
        self.agent.post("heartbeat", {"current_tasks": []})
        resume = self.client.post(f"/api/v1/workers/{self.agent.id}/commands", json={"command": "resume"},
                                  headers=operator)
        assert resume.status_code == 201, resume.text
        for _ in range(2):
            task = self.client.post("/api/v1/tasks", json=task_body(name="fuzz running"), headers=operator)
            assert task.status_code == 201, task.text
        leased = self.agent.lease(max_tasks=5)
        assert leased, "the fuzzing worker leased nothing"
        for t in leased:
            self.attempts[t["attempt_id"]] = t["task_id"]
            self.known["task_id"].insert(0, t["task_id"])
            self.known["attempt_id"].insert(0, t["attempt_id"])

    def credential(self, endpoint: Endpoint, path_parameters: dict[str, Any]) -> str | None:
        """The key or token that lets a call through to the handler (None for public routes)."""
        if endpoint.access == Access.PUBLIC:
            return None
        if endpoint.access == Access.AGENT:
            return AGENT_TOKEN
        if endpoint.access in (Access.WORKER, Access.WORKER_OR_OPERATOR, Access.WORKER_OR_READ):
            if str(path_parameters.get("worker_id")) == self.agent.id or endpoint.access == Access.WORKER:
                return self.agent.token
        return OPERATOR_KEY

    def realise(self, endpoint: Endpoint, case: Any, data: st.DataObject) -> None:
        """Put real ids into most cases: path parameters, a report's task and attempt, a bulk action's ids."""
        def often() -> bool:
            return data.draw(st.integers(0, 3), label="real") < 3  # three times in four (0 is what shrinks to)

        for name in list(case.path_parameters or {}):
            real = self.known.get(name, [])
            if real and often():
                case.path_parameters[name] = data.draw(st.sampled_from(real), label=name)
                if name == "key" and often():  # a valid link, as the file listing gives it
                    case.query = {**(case.query or {}), **self.signed[case.path_parameters[name]]}
        body = case.body if isinstance(case.body, dict) else {}
        events = body.get("events")
        for event in events if isinstance(events, list) else []:
            if isinstance(event, dict) and often():
                attempt = data.draw(st.sampled_from(self.known["attempt_id"]), label="event attempt")
                event.update(task_id=self.attempts[attempt], attempt_id=attempt)
        if endpoint.body is BulkAction and isinstance(body.get("ids"), list) and body["ids"] and often():
            body["ids"] = data.draw(st.lists(st.sampled_from(self.known["task_id"]), min_size=1, max_size=3))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def target(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The API with keys, a registered worker and tasks in every state; prints the statuses seen per route."""
    redis_url, database_url = servers
    config = Settings(state_dir=tmp_path_factory.mktemp("fuzz"), redis_url=redis_url, database_url=database_url,
                      key_prefix=f"t{uuid.uuid4().hex[:10]}", heartbeat_timeout=3600, max_batch_tasks=20,
                      lease_max_wait=0.2)
    keys = f"operator:{OPERATOR_KEY},read:{READ_KEY}"
    with serving(config, api_keys=keys, agent_token=AGENT_TOKEN) as (_server, client):
        agent = HttpAgent.register(client, token=AGENT_TOKEN, hostname="fuzz-node", cpu_cores=64)
        op = bearer(OPERATOR_KEY)
        ids = [client.post("/api/v1/tasks", json=task_body(name=f"fuzz {i}"), headers=op).json()["id"]
               for i in range(5)]
        leased = agent.lease(max_tasks=3)
        assert len(leased) == 3
        assert agent.report(leased[0], "succeeded", result={"ok": True}).status_code == 200
        assert agent.report(leased[1], "failed", reason="permanent", error="bad input").status_code == 200
        assert client.delete(f"/api/v1/tasks/{ids[3]}", headers=op).status_code == 200
        upload = client.put(f"/api/v1/workers/{agent.id}/attempts/{leased[2]['attempt_id']}/outputs/out.txt",
                            content=b"result\n", headers=agent.headers)
        assert upload.status_code == 201, upload.text
        files = client.get(f"/api/v1/tasks/{leased[2]['task_id']}/files", headers=op).json()
        outputs = [o for a in files["attempts"] for o in a["outputs"]]
        signed = {o["key"]: dict(parse_qsl(urlsplit(o["url"]).query)) for o in outputs}
        known = {"worker_id": [agent.id], "task_id": ids, "attempt_id": [t["attempt_id"] for t in leased],
                 "path": ["out.txt", "sub/dir/result.sdf"], "key": list(signed)}
        attempts = {t["attempt_id"]: t["task_id"] for t in leased}
        schema = schemathesis.openapi.from_url(f"{client.base_url}/api/v1/openapi.json")
        found = Target(str(client.base_url), client, schema, agent, known, attempts, signed)
        yield found
    with SyncRedis.from_url(redis_url) as redis:
        wipe_index(redis, config.key_prefix)
    total = sum(sum(c.values()) for c in found.statuses.values())
    print(f"\nschemathesis: {total} requests over {len(found.statuses)} routes")
    for label, counts in found.statuses.items():
        print(f"  {label}: {dict(sorted(counts.items()))}")


def test_the_served_document_describes_every_route(target: Target) -> None:
    """Every route of the app is an operation of the served document, and nothing else is."""
    served = set()
    for result in target.schema.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result.err()}"
        served.add(result.ok().label)
    assert served == {f"{e.method} {openapi_path(e)}" for e in ENDPOINTS}


def cases(target: Target, endpoint: Endpoint) -> st.SearchStrategy[Any]:
    """Valid and invalid requests for the route, as schemathesis generates them from the served document."""
    operation = target.schema[openapi_path(endpoint)][endpoint.method]
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{e.method} {openapi_path(e)}" for e in ENDPOINTS])
def test_no_route_answers_5xx(target: Target, endpoint: Endpoint) -> None:
    """Schemathesis' requests for this route, with real ids most of the time, all answer below 500."""
    target.top_up()
    label = f"{endpoint.method} {openapi_path(endpoint)}"
    seen = target.statuses.setdefault(label, collections.Counter())
    session = requests.Session()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases(target, endpoint), data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        target.realise(endpoint, case, data)
        key = target.credential(endpoint, case.path_parameters or {})
        if key is not None:  # in the case itself: a negative case that dropped the header gets it back
            case.headers = {**(case.headers or {}), **bearer(key)}
        started = time.monotonic()
        response = case.call(base_url=target.url, session=session, timeout=30)
        seen[response.status_code] += 1
        not_ready = endpoint.path == "/readyz" and response.status_code == 503  # the probe's answer: no timers
        assert response.status_code < 500 or not_ready, (
            f"{label} answered {response.status_code} after {time.monotonic() - started:.2f}s: "
            f"{response.text[:500]}\nreproduce: {case.as_curl_command()}")
        if response.status_code >= 400 and response.headers.get("content-type", [""])[0] == "application/json":
            answer = response.json()  # the one error shape; a report's 409 gives each event's outcome instead
            assert isinstance(answer.get("error"), str) or "results" in answer, response.text

    fuzz()
    session.close()
    reached = sum(n for status, n in seen.items() if status not in (401, 403, 421))
    assert reached > 0, f"no request for {label} got past authentication: {dict(seen)}"
