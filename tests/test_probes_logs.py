"""Health probes (`/livez`, `/readyz`), request ids, and the coordinator's log: one format (text or JSON) for its
records and uvicorn's, a log level, and an access record per request carrying the response's request id."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis

from coordinator.api.app import package_version
from coordinator.config import Settings
from coordinator.server import BackgroundServer
from tests.support.agent import HttpAgent
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
FOREIGN_ENV = ("AIDD_", "REDIS_", "DATABASE_URL", "POSTGRES_", "MINIO_")


def test_probes_say_the_version_and_what_is_not_ready(client: httpx.Client) -> None:
    """`/livez` answers from the loop alone; `/readyz` without a leader (this API runs no timers) is 503 naming it."""
    live = client.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "ok", "version": package_version()})
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "version": package_version(), "redis": "ok", "postgres": "ok",
                            "schema": "ok", "leader": "none yet", "error": "not ready: leader none yet"}
    assert client.get("/api/v1/health").json()["status"] == "ok"  # the old route stays


@pytest.fixture
def leading(settings: Settings, clean_db: None, redis: SyncRedis) -> Iterator[BackgroundServer]:
    """The API with its timers (so it leads), serving only the Host `aidd.example` besides the probes."""
    server = BackgroundServer(settings.model_copy(update={"port": 0, "allowed_hosts": ["aidd.example"]})).start()
    yield server
    server.stop()


def test_ready_once_leading_and_probes_answer_any_host(leading: BackgroundServer) -> None:
    """With a leader `/readyz` is 200; the probes answer a kubelet's Host (the pod's address) while other routes
    refuse it."""
    with httpx.Client(base_url=leading.url, timeout=30, headers={"Host": "10.1.2.3:8333"}) as http:
        ready = wait_until(lambda: (r := http.get("/readyz")).status_code == 200 and r, 20, "a leader")
        assert ready.json()["leader"] == "ok"
        assert http.get("/livez").status_code == 200
        assert http.get("/api/v1/health").status_code == 421


def test_request_ids_in_headers_and_error_bodies(client: httpx.Client) -> None:
    """Every answer carries `X-Request-ID`: the caller's when it is plain, else a new one; an error body names it."""
    fresh = client.get("/api/v1/tasks/not-a-task-id")
    assert fresh.status_code == 422
    assert fresh.json()["request_id"] == fresh.headers["x-request-id"] and len(fresh.headers["x-request-id"]) == 32
    given = client.get("/api/v1/tasks/not-a-task-id", headers={"X-Request-ID": "pipeline-42.step:3"})
    assert given.headers["x-request-id"] == given.json()["request_id"] == "pipeline-42.step:3"
    odd = client.get("/livez", headers={"X-Request-ID": "no spaces <please>"})
    assert odd.headers["x-request-id"] != "no spaces <please>"
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    request_id = missing.headers["x-request-id"]
    assert missing.json() == {"error": "GET /no/such/route: no such route", "request_id": request_id}


def test_heartbeats_are_logged_at_debug_unless_they_fail(client: httpx.Client,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A fleet beats every few seconds: an answered heartbeat is an access record at debug level, a refused one (and
    every other request) at info."""
    agent = HttpAgent.register(client)
    with caplog.at_level(logging.DEBUG, logger="aidd.access"):
        agent.heartbeat([])
        refused = client.post(f"/api/v1/workers/{agent.id}/heartbeat", json={}, headers={"Authorization": "Bearer x"})
        assert refused.status_code == 401
        client.get("/livez")

        beat = f"/api/v1/workers/{agent.id}/heartbeat"

        def levels() -> dict[tuple[str, int], int]:
            """The records of these three requests: the registration's own record, written once its answer had gone
            out, may land after the level was lowered."""
            return {(r.path, r.status): r.levelno for r in caplog.records  # type: ignore[attr-defined]
                    if r.name == "aidd.access" and r.path in (beat, "/livez")}  # type: ignore[attr-defined]
        # a request's record is written once its answer has gone out: the client may have it a moment before
        wait_until(lambda: len(levels()) == 3, 10, "a record of each request")
    assert levels() == {(beat, 200): logging.DEBUG, (beat, 401): logging.INFO, ("/livez", 200): logging.INFO}


def serve_and_stop(servers: tuple[str, str], tmp_path: Path, *flags: str) -> tuple[str, list[httpx.Response]]:
    """`aidd --serve FLAGS` on the session's stores: ask /livez and a missing task once it answers, SIGTERM it;
    its stderr and the answers."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    config = tmp_path / "empty.yml"
    config.write_text("{}\n")
    environ.update({"PYTHONPATH": str(ROOT), "AIDD_CONFIG": str(config), "REDIS_URL": servers[0],
                    "DATABASE_URL": servers[1], "AIDD_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}",
                    "AIDD_STATE_DIR": str(tmp_path / "state")})
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "aiddclient.cli", "--serve", "--port", str(port), *flags],
                                   cwd=tmp_path, env=environ, stderr=log, stdout=log)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                def answered() -> httpx.Response | None:
                    try:
                        return http.get("/livez")
                    except httpx.TransportError:
                        return None
                answers = [wait_until(answered, 60, "aidd --serve to answer"),
                           http.get(f"/api/v1/tasks/{uuid.uuid4()}")]
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return log_path.read_text(), answers


def test_json_log_has_one_format_and_an_access_record(servers: tuple[str, str], tmp_path: Path) -> None:
    """`--log-format json`: every line is a JSON object (uvicorn's start and stop records too), and each request
    has an access record with its method, path, status and the request id its answer carried."""
    output, (live, missing) = serve_and_stop(servers, tmp_path, "--log-format", "json")
    records = [json.loads(line) for line in output.splitlines()]
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "aidd.access"} <= loggers, loggers
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = {r["request_id"]: r for r in records if r["logger"] == "aidd.access"}
    assert access[live.headers["x-request-id"]]["path"] == "/livez"
    record = access[missing.headers["x-request-id"]]
    assert (record["method"], record["status"]) == ("GET", 404) and record["duration_ms"] >= 0


def test_log_level_warning_keeps_only_warnings(servers: tuple[str, str], tmp_path: Path) -> None:
    """`--log-level warning` (text): no start-up chatter and no access records."""
    output, _ = serve_and_stop(servers, tmp_path, "--log-level", "warning")
    assert " INFO " not in output and "aidd.access" not in output, output


def test_a_bad_log_setting_names_its_variable(tmp_path: Path) -> None:
    """AIDD_LOG_FORMAT=xml stops `aidd --serve` with one line naming the variable (not the setting's name), exit 2."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    environ.update({"PYTHONPATH": str(ROOT), "AIDD_LOG_FORMAT": "xml", "AIDD_STATE_DIR": str(tmp_path)})
    done = subprocess.run([sys.executable, "-m", "aiddclient.cli", "--serve"], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (2, "aidd: AIDD_LOG_FORMAT: Input should be 'text' or 'json', got 'xml'\n")
