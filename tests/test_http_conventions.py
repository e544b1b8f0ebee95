"""The API behaves as generic HTTP clients expect: JSON errors for every status, paths with or without a
trailing slash, docs pages served offline, a complete OpenAPI document that a generated client works from,
and CORS for named origins."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from coordinator.api.app import ENDPOINTS
from coordinator.config import Settings
from coordinator.server import BackgroundServer
from tests.helpers import serving
from tests.support.tasks import task_body


def test_unknown_routes_and_methods_answer_the_json_error_shape(client: httpx.Client) -> None:
    """404 and 405 come as {"error": ...} like every other error, the 405 naming the methods allowed."""
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert "no such route" in missing.json()["error"]
    wrong = client.patch("/api/v1/tasks")
    assert wrong.status_code == 405 and "not allowed" in wrong.json()["error"]
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def test_a_trailing_slash_is_the_same_path_without_a_redirect(client: httpx.Client) -> None:
    """`/api/v1/workers/` and `POST /api/v1/tasks/` are answered in place (curl and httpx follow no 307)."""
    listed = client.get("/api/v1/workers/")
    assert listed.status_code == 200 and listed.json() == {"items": []}
    submitted = client.post("/api/v1/tasks/", json=task_body())
    assert submitted.status_code == 201
    task_id = submitted.json()["id"]
    assert client.get(f"/api/v1/tasks/{task_id}/").json()["id"] == task_id
    assert client.get("/api/v1/nothing/").status_code == 404


def test_docs_and_redoc_are_served_from_the_package(client: httpx.Client) -> None:
    """Swagger UI and ReDoc load their scripts from this coordinator, never a CDN, and point at the document."""
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "/api/v1/openapi.json" in html.text
        assert not re.search(r"(src|href)=\"https?:", html.text), "the page loads something from elsewhere"
        for asset in re.findall(r"(?:src|href)=\"(/docs/static/[^\"]+)\"", html.text):
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 100_000, asset
    assert client.get("/docs/static/../../etc/passwd").status_code == 404
    assert client.get("/docs/static/LICENSE.redoc").status_code == 404


def test_every_route_documents_its_answer_and_tag(client: httpx.Client) -> None:
    """Each operation has a tag and a schema (or a media type) for its success answer."""
    document = client.get("/api/v1/openapi.json").json()
    tags = {t["name"] for t in document["tags"]}
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert len(operations) == len(ENDPOINTS)
    for op in operations:
        assert op["tags"] and set(op["tags"]) <= tags, op["operationId"]
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success and all(op["responses"][c].get("content") for c in success), op["operationId"]


def test_cors_for_named_origins_only(settings: Settings, clean_db: None) -> None:
    """A named dashboard origin gets CORS headers and may submit; any other origin gets neither."""
    dashboard = "http://dash.example.org:8080"
    with serving(settings, cors_origins=[dashboard]) as (_server, client):
        preflight = client.options("/api/v1/tasks", headers={"Origin": dashboard, "Access-Control-Request-Method":
                                                             "POST", "Access-Control-Request-Headers": "content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == dashboard
        sent = client.post("/api/v1/tasks", json=task_body(), headers={"Origin": dashboard})
        assert sent.status_code == 201 and sent.headers["access-control-allow-origin"] == dashboard
        foreign = client.post("/api/v1/tasks", json=task_body(), headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers


def test_a_generated_client_submits_lists_gets_and_cancels(api_server: BackgroundServer, tmp_path: Path) -> None:
    """openapi-python-client, run on the served document (about a second), gives a client that works as is."""
    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    if generator is None:
        pytest.skip("openapi-python-client is not installed (pip install -e '.[dev]')")
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{api_server.url}/api/v1/openapi.json").content)
    done = subprocess.run([generator, "generate", "--path", str(document), "--meta", "none",
                           "--output-path", str(tmp_path / "aidd_generated")], capture_output=True, text=True,
                          env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0 and "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        api = importlib.import_module("aidd_generated")
        tasks = importlib.import_module("aidd_generated.api.tasks")
        models = importlib.import_module("aidd_generated.models")
        for name in ("submit", "list_tasks", "get_task", "cancel"):
            importlib.import_module(f"aidd_generated.api.tasks.{name}")
        with api.Client(base_url=api_server.url) as http:
            spec = models.TaskSpec.from_dict(task_body(priority=3))
            created = tasks.submit.sync(client=http, body=spec)
            assert isinstance(created, models.TaskView) and created.status == "pending"
            pending = models.ListTasksStatusItem("pending")
            page = tasks.list_tasks.sync(client=http, status=[pending], page_size=5)
            assert isinstance(page, models.TaskPage) and [t.id for t in page.items] == [created.id]
            got = tasks.get_task.sync(created.id, client=http)
            assert got is not None and got.priority == 3 and got.service == "admet"
            cancelled = tasks.cancel.sync(created.id, client=http)
            assert cancelled is not None and cancelled.status == "cancelled"
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("aidd_generated")]:
            del sys.modules[module]
