"""Task files over the real API (uvicorn on loopback), once with the local store and once with MinIO's client on
a real S3-protocol server: multipart submission, references, the agent's inputs and output uploads, presigned
downloads, the CLI, and retention."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from aiddclient.cli import main as cli_main
from coordinator.config import ApiKey, Settings
from coordinator.core import utcnow
from coordinator.files import FileService
from coordinator.models import Task
from coordinator.reconcile import repair_drift
from coordinator.schemas import TaskSpec
from coordinator.server import BackgroundServer
from coordinator.service import Coordinator
from coordinator.states import TaskStatus
from coordinator.storage import LocalStore, ObjectStore
from coordinator.storage.names import input_key, output_key
from tests.support.agent import HttpAgent

LIMIT = 6 * 1024 * 1024
SIZES = [0, 1, 5 * 1024 * 1024, LIMIT - 1]
TASK = {"service": "docking", "task_type": "vina", "name": "dock one ligand", "outputs": ["*.sdf", "results/*.csv"]}


@pytest.fixture(params=["local", "minio"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The session's servers with a small file limit, and either the local store or a fresh MinIO bucket."""
    update: dict[str, Any] = {"max_file_bytes": LIMIT}
    if request.param == "minio":
        update |= {"minio_endpoint": request.getfixturevalue("s3_endpoint"), "minio_access_key": "test",
                   "minio_secret_key": "test-secret", "minio_bucket": f"t{uuid.uuid4().hex[:16]}"}
    return settings.model_copy(update=update)


@pytest.fixture
def store(api_server: BackgroundServer) -> ObjectStore:
    """The running coordinator's object store."""
    return api_server.coordinator.files.store


@pytest.fixture
def downloads() -> Iterator[httpx.Client]:
    """A client without API key: presigned URLs carry their own credentials."""
    with httpx.Client(timeout=60) as http:
        yield http


def multipart(client: httpx.Client, task: dict[str, Any], files: list[tuple[str, bytes]]) -> httpx.Response:
    return client.post("/api/v1/tasks", data={"task": json.dumps(task)},
                       files=[("files", (name, data)) for name, data in files])


def raw_multipart(client: httpx.Client, task: dict[str, Any], filename: bytes, data: bytes) -> httpx.Response:
    """A hand-made body, so names a polite client would escape (control characters) reach the server as they are."""
    boundary = b"aiddboundary42"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n" + json.dumps(task).encode()
            + b"\r\n--" + boundary + b"\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" + filename
            + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n")
    return client.post("/api/v1/tasks", content=body,
                       headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"})


def assert_nothing_created(client: httpx.Client, store: ObjectStore) -> None:
    assert client.get("/api/v1/tasks").json()["total"] == 0
    assert store.list_objects("tasks/") == []


class Worker(HttpAgent):
    """A scripted agent over HTTP that also fetches and uploads its attempts' files."""

    def __init__(self, client: httpx.Client, hostname: str = "node-1") -> None:
        agent = HttpAgent.register(client, hostname=hostname, cpu_cores=4)
        super().__init__(client, agent.id, agent.token)

    def lease_one(self) -> dict[str, Any]:
        [task] = self.lease()
        return task

    def files(self, attempt_id: str) -> httpx.Response:
        return self.client.get(f"/api/v1/workers/{self.id}/attempts/{attempt_id}/files", headers=self.headers)

    def upload(self, attempt_id: str, path: str, data: bytes) -> httpx.Response:
        return self.client.put(f"/api/v1/workers/{self.id}/attempts/{attempt_id}/outputs/{path}", content=data,
                               headers=self.headers)

    def finish(self, leased: dict[str, Any], event: str = "succeeded") -> None:
        assert self.report(leased, event).status_code == 200


# -- submission -------------------------------------------------------------------------------------------------


def test_multipart_submission_round_trips_byte_exact(client: httpx.Client, downloads: httpx.Client) -> None:
    files = [(f"in/{size}.bin", os.urandom(size)) for size in SIZES]
    response = multipart(client, TASK, files)
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["status"] == "pending" and task["outputs"] == TASK["outputs"]
    assert task["input_files"] == [input_key(task["id"], name) for name, _ in files]
    listing = client.get(f"/api/v1/tasks/{task['id']}/files").json()
    assert listing["expires_in_s"] == 86_400 and listing["attempts"] == []
    assert [(f["name"], f["size"]) for f in listing["inputs"]] == [(name, len(data)) for name, data in files]
    for entry, (_, data) in zip(listing["inputs"], files, strict=True):
        fetched = downloads.get(entry["url"])
        assert fetched.status_code == 200 and fetched.content == data


def test_a_task_committed_but_not_queued_is_kept_with_its_files(api_server: BackgroundServer, client: httpx.Client,
                                                                 store: ObjectStore, redis: Any) -> None:
    """PostgreSQL committed the task, then Redis failed to queue it (here: its queue key holds a string). The task
    is durable, so it is acknowledged and its input files stay; the reconciler queues it. (It used to be a 503
    that deleted the inputs of a task that existed and would run.)"""
    queue = api_server.coordinator.core.keys.service_queue(TASK["service"], "default")
    redis.set(queue, "not a sorted set")
    try:
        response = multipart(client, TASK, [("ligand.smi", b"CCO\n")])
    finally:
        redis.delete(queue)
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    assert [o.key for o in store.list_objects(f"tasks/{task_id}/")] == [input_key(task_id, "ligand.smi")]

    api_server.call(lambda: repair_drift(api_server.coordinator.core))
    leased = Worker(client).lease_one()
    assert leased["task_id"] == task_id and leased["input_files"] == [input_key(task_id, "ligand.smi")]


@pytest.mark.parametrize("sizes", [[LIMIT + 1], [10, LIMIT + 1]], ids=["alone", "after-a-good-file"])
def test_a_file_over_the_limit_is_413_and_nothing_is_kept(client: httpx.Client, store: ObjectStore,
                                                          sizes: list[int]) -> None:
    response = multipart(client, TASK, [(f"f{i}.bin", os.urandom(n)) for i, n in enumerate(sizes)])
    assert response.status_code == 413
    assert response.json()["field"] == f"files[{len(sizes) - 1}]"
    assert "max_file_bytes" in response.json()["error"]
    assert_nothing_created(client, store)


@pytest.mark.parametrize("name", [b"../evil.sh", b"a/../../b", b"/etc/passwd", b"a\\b", b"a\x01b", b"a\x7fb", b"",
                                  b"dir//x", b"./x", b"C:evil"])
def test_unsafe_file_names_are_refused(client: httpx.Client, store: ObjectStore, name: bytes) -> None:
    response = raw_multipart(client, TASK, name, b"payload")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "files[0]"
    assert_nothing_created(client, store)


def test_bad_multipart_submissions(client: httpx.Client, store: ObjectStore) -> None:
    no_task = client.post("/api/v1/tasks", data={"other": "x"}, files=[("files", ("a.txt", b"a"))])
    assert no_task.status_code == 422 and no_task.json()["field"] == "other"
    missing = client.post("/api/v1/tasks", files=[("files", ("a.txt", b"a"))])
    assert missing.status_code == 422 and missing.json()["field"] == "task"
    bad_json = client.post("/api/v1/tasks", data={"task": "{nope"}, files=[("files", ("a.txt", b"a"))])
    assert bad_json.status_code == 400 and bad_json.json()["field"] == "task"
    bad_field = multipart(client, {**TASK, "priority": "high"}, [("a.txt", b"a")])
    assert bad_field.status_code == 422 and bad_field.json()["field"] == "task.priority"
    twice = multipart(client, TASK, [("a.txt", b"a"), ("a.txt", b"b")])
    assert twice.status_code == 422 and twice.json()["field"] == "files[1]"
    folder_clash = multipart(client, TASK, [("a", b"a"), ("a/b", b"b")])
    assert folder_clash.status_code == 422 and folder_clash.json()["field"] == "task.input_files"
    bad_glob = multipart(client, {**TASK, "outputs": ["../*.sdf"]}, [("a.txt", b"a")])
    assert bad_glob.status_code == 422 and bad_glob.json()["field"] == "task.outputs[0]"
    assert_nothing_created(client, store)


def test_json_submission_refers_to_stored_files(client: httpx.Client, store: ObjectStore,
                                                downloads: httpx.Client) -> None:
    first = multipart(client, TASK, [("receptor.pdb", b"ATOM 1")]).json()
    key = first["input_files"][0]
    second = client.post("/api/v1/tasks", json={**TASK, "input_files": [key]})
    assert second.status_code == 201, second.text
    listing = client.get(f"/api/v1/tasks/{second.json()['id']}/files").json()
    assert [(f["name"], f["key"], f["size"]) for f in listing["inputs"]] == [("receptor.pdb", key, 6)]
    assert downloads.get(listing["inputs"][0]["url"]).content == b"ATOM 1"

    missing = client.post("/api/v1/tasks", json={**TASK, "input_files": [input_key(uuid.uuid4(), "x.pdb")]})
    assert missing.status_code == 422 and missing.json()["field"] == "input_files[0]"
    not_a_key = client.post("/api/v1/tasks", json={**TASK, "input_files": [key, "../../etc/passwd"]})
    assert not_a_key.status_code == 422 and not_a_key.json()["field"] == "input_files[1]"
    same_name = client.post("/api/v1/tasks", json={**TASK, "input_files": [key, key]})
    assert same_name.status_code == 422 and same_name.json()["field"] == "input_files"
    batch = client.post("/api/v1/tasks", json={"tasks": [{**TASK, "input_files": [key]},
                                                         {**TASK, "input_files": [key + "x"]}]})
    assert batch.status_code == 422 and batch.json()["field"] == "tasks[1].input_files[0]"
    assert client.get("/api/v1/tasks").json()["total"] == 2


# -- the agent's side --------------------------------------------------------------------------------------------


def test_agent_gets_its_inputs_and_uploads_outputs(client: httpx.Client, store: ObjectStore,
                                                   downloads: httpx.Client) -> None:
    ligand = os.urandom(1000)
    task = multipart(client, TASK, [("ligand.sdf", ligand)]).json()
    worker = Worker(client)
    leased = worker.lease_one()
    assert leased["input_files"] == task["input_files"] and leased["attempt"] == 1
    files = worker.files(leased["attempt_id"])
    assert files.status_code == 200, files.text
    view = files.json()
    assert view["outputs"] == TASK["outputs"] and view["max_file_bytes"] == LIMIT and view["attempt"] == 1
    upload_path = f"/api/v1/workers/{worker.id}/attempts/{leased['attempt_id']}/outputs/"
    assert view["upload_url"] == f"{client.base_url}{upload_path}"
    assert [(f["name"], f["size"]) for f in view["inputs"]] == [("ligand.sdf", 1000)]
    assert downloads.get(view["inputs"][0]["url"]).content == ligand

    outputs = {f"results/{size}.csv": os.urandom(size) for size in SIZES}
    for path, data in outputs.items():
        uploaded = worker.upload(leased["attempt_id"], path, data)
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json() == {"name": path, "key": output_key(task["id"], 1, path), "size": len(data),
                                   "attempt": 1}
    too_big = worker.upload(leased["attempt_id"], "results/huge.csv", os.urandom(LIMIT + 1))
    assert too_big.status_code == 413
    assert store.stat(output_key(task["id"], 1, "results/huge.csv")) is None
    sneaky = client.put(f"/api/v1/workers/{worker.id}/attempts/{leased['attempt_id']}/outputs/%2E%2E/x",
                        content=b"x", headers=worker.headers)
    assert sneaky.status_code == 422 and sneaky.json()["field"] == "path"
    other = Worker(client, "node-2")
    assert client.put(f"/api/v1/workers/{worker.id}/attempts/{leased['attempt_id']}/outputs/a.sdf",
                      content=b"x", headers=other.headers).status_code == 401
    assert other.upload(leased["attempt_id"], "a.sdf", b"x").status_code == 409  # not its attempt
    assert other.files(leased["attempt_id"]).status_code == 409

    worker.finish(leased)
    assert worker.upload(leased["attempt_id"], "late.sdf", b"x").status_code == 409  # no longer running
    listing = client.get(f"/api/v1/tasks/{task['id']}/files").json()
    assert [(a["number"], a["attempt_id"], a["end_reason"]) for a in listing["attempts"]] == [
        (1, leased["attempt_id"], "succeeded")]
    stored = listing["attempts"][0]["outputs"]
    assert sorted((f["name"], f["size"]) for f in stored) == sorted((p, len(d)) for p, d in outputs.items())
    for entry in stored:
        assert downloads.get(entry["url"]).content == outputs[entry["name"]]


def test_outputs_of_each_attempt_are_kept_apart(client: httpx.Client) -> None:
    task = client.post("/api/v1/tasks", json={**TASK, "max_retries": 1}).json()
    worker = Worker(client)
    first = worker.lease_one()
    assert worker.upload(first["attempt_id"], "partial.sdf", b"one").status_code == 201
    assert client.post(f"/api/v1/tasks/{task['id']}/requeue").status_code == 200
    worker.confirm_stopped()
    second = worker.lease_one()
    assert second["attempt"] == 2
    assert worker.upload(second["attempt_id"], "partial.sdf", b"two").status_code == 201
    listing = client.get(f"/api/v1/tasks/{task['id']}/files").json()
    assert [(a["number"], [(f["name"], f["size"]) for f in a["outputs"]]) for a in listing["attempts"]] == [
        (1, [("partial.sdf", 3)]), (2, [("partial.sdf", 3)])]


# -- downloads and the CLI ---------------------------------------------------------------------------------------


def test_roles_with_api_keys(settings: Settings, clean_db: None, redis: Any, downloads: httpx.Client) -> None:
    keys = [ApiKey(name="reader", role="read", key="read-key-123"),
            ApiKey(name="pipeline", role="submit", key="submit-key-123")]
    server = BackgroundServer(settings.model_copy(update={"port": 0, "api_keys": keys}), timers=False).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            as_reader = {"Authorization": "Bearer read-key-123"}
            body = {"data": {"task": json.dumps(TASK)}, "files": [("files", ("a.smi", b"CCO"))]}
            assert http.post("/api/v1/tasks", **body).status_code == 401  # type: ignore[arg-type]
            assert http.post("/api/v1/tasks", headers=as_reader, **body).status_code == 403  # type: ignore[arg-type]
            created = http.post("/api/v1/tasks", headers={"Authorization": "Bearer submit-key-123"},
                                **body)  # type: ignore[arg-type]
            assert created.status_code == 201
            files = http.get(f"/api/v1/tasks/{created.json()['id']}/files", headers=as_reader)
            assert files.status_code == 200
            assert downloads.get(files.json()["inputs"][0]["url"]).content == b"CCO"  # the URL is the credential
            assert http.get(f"/api/v1/tasks/{created.json()['id']}/files").status_code == 401
    finally:
        server.stop()



def test_download_links_are_checked(client: httpx.Client, store: ObjectStore, downloads: httpx.Client) -> None:
    task = multipart(client, TASK, [("a.smi", b"CCO")]).json()
    url = client.get(f"/api/v1/tasks/{task['id']}/files").json()["inputs"][0]["url"]
    if isinstance(store, LocalStore):
        assert url.startswith(f"{client.base_url}/api/v1/files/tasks/{task['id']}/inputs/a.smi?expires=")
        assert downloads.get(url).headers["content-disposition"] == "attachment; filename*=UTF-8''a.smi"
        assert downloads.get(url[:-1] + ("0" if url[-1] != "0" else "1")).status_code == 403
        key = f"tasks/{task['id']}/inputs/a.smi"
        assert client.get(f"/api/v1/files/{key}?expires=1&signature={store.signature(key, 1)}").status_code == 403
        assert client.get(f"/api/v1/files/{key}").status_code == 403
    else:
        assert url.startswith(f"http://{store.endpoint.split('://')[1]}/")  # type: ignore[attr-defined]
        assert client.get(f"/api/v1/files/tasks/{task['id']}/inputs/a.smi").status_code == 404
    assert client.get(f"/api/v1/tasks/{uuid.uuid4()}/files").status_code == 404


def test_cli_downloads_the_outputs(api_server: BackgroundServer, client: httpx.Client, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    task = client.post("/api/v1/tasks", json=TASK).json()
    worker = Worker(client)
    leased = worker.lease_one()
    outputs = {"poses.sdf": os.urandom(4096), "results/scores.csv": b"ligand,score\nCCO,-7.1\n"}
    for path, data in outputs.items():
        worker.upload(leased["attempt_id"], path, data)
    worker.finish(leased, "succeeded")
    assert cli_main(["files", task["id"], "--url", api_server.url]) == 0
    listed = capsys.readouterr().out
    assert "poses.sdf" in listed and "results/scores.csv" in listed and "4096" in listed
    target = tmp_path / "out"
    assert cli_main(["files", task["id"], "--download", str(target), "--url", api_server.url]) == 0
    assert "downloaded 2 file(s)" in capsys.readouterr().out
    for path, data in outputs.items():
        assert (target / path).read_bytes() == data
    assert cli_main(["files", str(uuid.uuid4()), "--url", api_server.url]) == 1


# -- retention ---------------------------------------------------------------------------------------------------


async def _task_with_files(coordinator: Coordinator, status: TaskStatus, finished_days_ago: float | None,
                           input_files: list[str] | None = None) -> uuid.UUID:
    spec = TaskSpec.model_validate({**TASK, "input_files": input_files or []})
    task_id = (await coordinator.tasks.submit([spec])).ids[0]
    finished = utcnow() - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    async with coordinator.core.engine.begin() as conn:
        running = {"attempt_id": uuid.uuid4(), "worker_id": uuid.uuid4()} if status == TaskStatus.RUNNING else {}
        await conn.execute(update(Task).where(Task.id == task_id).values(status=status.value, finished_at=finished,
                                                                          **running))
    store = coordinator.files.store
    await asyncio.to_thread(store.put, input_key(task_id, "in.smi"), io.BytesIO(b"CCO"), LIMIT)
    await asyncio.to_thread(store.put, output_key(task_id, 1, "out.sdf"), io.BytesIO(b"pose"), LIMIT)
    return task_id


async def _kept(coordinator: Coordinator, task_id: uuid.UUID) -> int:
    return len(await asyncio.to_thread(coordinator.files.store.list_objects, f"tasks/{task_id}/"))


@pytest.mark.anyio
async def test_retention_deletes_only_old_finished_tasks_files(coordinator: Coordinator) -> None:
    old = {s: await _task_with_files(coordinator, s, 40) for s in
           (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMEOUT)}
    recent = await _task_with_files(coordinator, TaskStatus.SUCCEEDED, 29)
    pending = await _task_with_files(coordinator, TaskStatus.PENDING, 40)  # retried after it had finished
    running = await _task_with_files(coordinator, TaskStatus.RUNNING, None)
    referenced = await _task_with_files(coordinator, TaskStatus.SUCCEEDED, 40)
    await _task_with_files(coordinator, TaskStatus.PENDING, None, [input_key(referenced, "in.smi")])
    assert await coordinator.files.expire_finished() == 4
    for task_id in old.values():
        assert await _kept(coordinator, task_id) == 0
    for task_id in (recent, pending, running, referenced):
        assert await _kept(coordinator, task_id) == 2
    assert await coordinator.files.expire_finished() == 0


@pytest.mark.anyio
async def test_retention_zero_keeps_files_forever(coordinator: Coordinator) -> None:
    forever = coordinator.core.settings.model_copy(update={"file_retention_days": 0})
    files = FileService(dataclasses.replace(coordinator.core, settings=forever), coordinator.files.store)
    task_id = await _task_with_files(coordinator, TaskStatus.SUCCEEDED, 4000)
    assert await files.expire_finished() == 0
    assert await _kept(coordinator, task_id) == 2


@pytest.mark.anyio
async def test_the_leader_runs_retention_from_its_timers(coordinator: Coordinator) -> None:
    task_id = await _task_with_files(coordinator, TaskStatus.SUCCEEDED, 31)
    await coordinator.timers.tick()
    for _ in range(100):
        if await _kept(coordinator, task_id) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _kept(coordinator, task_id) == 0
    later = await _task_with_files(coordinator, TaskStatus.SUCCEEDED, 31)
    await coordinator.timers.tick()  # within the hour: no second run
    await asyncio.sleep(0.3)
    assert await _kept(coordinator, later) == 2
