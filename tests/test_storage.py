"""The object stores: one suite run against the local directory store and against MinIO's client on a real
S3-protocol server (moto's stand-alone server on loopback); key names; storage settings."""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from minio import Minio

from coordinator.config import Settings, load_settings
from coordinator.errors import ConfigError, InvalidInput
from coordinator.storage import FileTooLarge, LocalStore, ObjectNotFound, ObjectStore, open_store
from coordinator.storage.names import check_name, input_key, name_problem, output_key, parse_key
from coordinator.storage.s3 import MinioStore, split_endpoint

LIMIT = 6 * 1024 * 1024
SIZES = [0, 1, 5 * 1024 * 1024, LIMIT - 1]


@pytest.fixture(params=["local", "minio"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """An empty store of each kind (a fresh bucket per test for MinIO)."""
    backend: ObjectStore
    if request.param == "local":
        backend = LocalStore(tmp_path / "files", tmp_path / "files.key")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        backend = MinioStore(endpoint, "test", "test-secret", f"t{uuid.uuid4().hex[:16]}")
    backend.ensure_ready()
    backend.ensure_ready()  # idempotent: the bucket / directory is there already
    yield backend
    backend.delete_prefix("")


def fetch(store: ObjectStore, key: str) -> bytes:
    return b"".join(store.get(key))


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1B", "5MiB", "limit-1"])
@pytest.mark.parametrize("known_length", [True, False], ids=["length", "stream"])
def test_round_trip_is_byte_exact(store: ObjectStore, size: int, known_length: bool) -> None:
    data = os.urandom(size)
    key = input_key(uuid.uuid4(), "lig and.sdf")
    info = store.put(key, io.BytesIO(data), LIMIT, size if known_length else -1)
    assert info.size == size
    assert store.stat(key) is not None and store.stat(key).size == size  # type: ignore[union-attr]
    assert fetch(store, key) == data


@pytest.mark.parametrize("known_length", [True, False], ids=["length", "stream"])
def test_over_the_limit_stores_nothing(store: ObjectStore, known_length: bool) -> None:
    data = os.urandom(LIMIT + 1)
    key = input_key(uuid.uuid4(), "big.bin")
    with pytest.raises(FileTooLarge) as raised:
        store.put(key, io.BytesIO(data), LIMIT, len(data) if known_length else -1)
    assert raised.value.status_code == 413
    assert store.stat(key) is None
    assert store.list_objects("") == []


def test_replacing_an_object_keeps_the_last_bytes(store: ObjectStore) -> None:
    key = output_key(uuid.uuid4(), 1, "out.csv")
    store.put(key, io.BytesIO(b"first version"), LIMIT)
    store.put(key, io.BytesIO(b"second"), LIMIT)
    assert fetch(store, key) == b"second"


def test_list_prefixes_and_delete_by_prefix(store: ObjectStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    keys = [input_key(a, "x.smi"), input_key(a, "dir/y.pdb"), output_key(a, 1, "poses/p1.sdf"),
            output_key(a, 2, "poses/p1.sdf"), input_key(b, "x.smi")]
    for i, key in enumerate(keys):
        store.put(key, io.BytesIO(b"z" * i), LIMIT, i)
    assert [(o.key, o.size) for o in store.list_objects(f"tasks/{a}/")] == sorted(
        (k, i) for i, k in enumerate(keys[:4]))
    assert [o.key for o in store.list_objects(f"tasks/{a}/attempts/1/")] == [keys[2]]
    assert store.list_prefixes("tasks/") == sorted([f"tasks/{a}/", f"tasks/{b}/"])
    assert store.list_prefixes(f"tasks/{a}/attempts/") == [f"tasks/{a}/attempts/1/", f"tasks/{a}/attempts/2/"]
    assert store.delete_prefix(f"tasks/{a}/") == 4
    assert [o.key for o in store.list_objects("tasks/")] == [keys[4]]
    assert store.list_prefixes("tasks/") == [f"tasks/{b}/"]
    assert store.delete_prefix(f"tasks/{a}/") == 0


def test_missing_objects(store: ObjectStore) -> None:
    key = input_key(uuid.uuid4(), "nothing.txt")
    assert store.stat(key) is None
    with pytest.raises(ObjectNotFound):
        store.get(key)
    assert store.list_objects(key) == []
    assert store.list_prefixes("tasks/") == []


def test_presigned_url_downloads_the_same_bytes(store: ObjectStore) -> None:
    data = os.urandom(5 * 1024 * 1024)
    key = output_key(uuid.uuid4(), 3, "results/table.csv")
    store.put(key, io.BytesIO(data), LIMIT, len(data))
    url = store.presign_get(key, 60)
    if isinstance(store, LocalStore):  # served by the coordinator: checked over HTTP in test_files
        path, _, query = url.partition("?")
        params = dict(item.split("=") for item in query.split("&"))
        assert path == f"/api/v1/files/{key}"
        assert store.verify(key, params["expires"], params["signature"])
        assert not store.verify(key + "x", params["expires"], params["signature"])
        assert not store.verify(key, str(int(params["expires"]) + 1), params["signature"])
        assert not store.verify(key, str(int(time.time()) - 1), store.signature(key, int(time.time()) - 1))
    else:
        response = httpx.get(url)
        assert response.status_code == 200 and response.content == data


def test_links_name_the_public_endpoint_without_contacting_it(s3_endpoint: str) -> None:
    """With a public endpoint, download links are signed for the address clients use (the host is part of an S3
    signature) by a client that never connects: here that address does not even resolve."""
    bucket, key = f"t{uuid.uuid4().hex[:16]}", input_key(uuid.uuid4(), "ligands.smi")
    store = MinioStore(s3_endpoint, "test", "test-secret", bucket, public_endpoint="https://files.invalid:9443")
    store.ensure_ready()
    store.put(key, io.BytesIO(b"CCO\n"), LIMIT, 4)
    assert store.presign_get(key, 60).startswith(f"https://files.invalid:9443/{bucket}/{key}?X-Amz-")
    when, expiry = datetime.now(UTC), timedelta(seconds=60)
    public = Minio("files.invalid:9443", access_key="test", secret_key="test-secret", secure=True, region="us-east-1")
    assert (store.signer.presigned_get_object(bucket, key, expiry, request_date=when)
            == public.presigned_get_object(bucket, key, expiry, request_date=when))
    assert fetch(store, key) == b"CCO\n"  # the store itself still talks to the internal endpoint
    store.delete_prefix("")


def test_local_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = LocalStore(tmp_path / "files", tmp_path / "files.key")
    first.ensure_ready()
    assert (tmp_path / "files.key").stat().st_mode & 0o777 == 0o600
    again = LocalStore(tmp_path / "files", tmp_path / "files.key")
    assert again.signature("k", 1) == first.signature("k", 1)
    other = LocalStore(tmp_path / "files", tmp_path / "other.key")
    assert other.signature("k", 1) != first.signature("k", 1)


def test_local_store_keeps_keys_inside_its_root(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "files", tmp_path / "files.key")
    local.ensure_ready()
    (tmp_path / "secret.txt").write_text("not yours")
    for key in ("../secret.txt", "tasks/../../secret.txt", "/etc/passwd"):
        assert local.stat(key) is None
        with pytest.raises(ObjectNotFound):
            local.get(key)


def test_local_listing_skips_a_file_deleted_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deletes a task's files while a client lists them: the listing leaves out what went, not a 503."""
    local = LocalStore(tmp_path / "files", tmp_path / "files.key")
    local.ensure_ready()
    for name in ("a.sdf", "b.sdf"):
        local.put(f"tasks/t/{name}", io.BytesIO(b"pose"), 100)
    walk = os.walk

    def walk_while_deleting(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
        for directory, dirs, files in walk(top):
            if "a.sdf" in files:
                os.unlink(os.path.join(directory, "a.sdf"))
            yield directory, dirs, files
    monkeypatch.setattr(os, "walk", walk_while_deleting)
    assert [o.key for o in local.list_objects("tasks/t/")] == ["tasks/t/b.sdf"]


@pytest.mark.parametrize("name", ["../evil", "a/../../b", "/etc/passwd", "a\\b", "a\x00b", "a\x01b", "a\nb",
                                  "a\x7fb", "", ".", "a//b", "a/", "./a", "C:evil", "x" * 256])
def test_unsafe_names_are_refused(name: str) -> None:
    assert name_problem(name) is not None
    with pytest.raises(InvalidInput) as raised:
        check_name(name, "files[0]")
    assert raised.value.field == "files[0]" and raised.value.status_code == 422


@pytest.mark.parametrize("name", ["ligand.sdf", "results/poses 1.sdf", "a..b", ".hidden", "émile.csv", "x" * 255])
def test_ordinary_names_pass(name: str) -> None:
    assert check_name(name, "f") == name


def test_keys_parse_back() -> None:
    task = uuid.uuid4()
    assert parse_key(input_key(task, "dir/a.smi")) == parse_key(f"tasks/{task}/inputs/dir/a.smi")
    parsed = parse_key(output_key(task, 2, "out/p.sdf"))
    assert parsed is not None and (parsed.task_id, parsed.attempt, parsed.name) == (task, 2, "out/p.sdf")
    for bad in (f"tasks/{task}/inputs/../x", f"tasks/{task}/other/x", "tasks/not-a-uuid/inputs/x",
                f"tasks/{task}/attempts/0/outputs/x", f"/tasks/{task}/inputs/x", "etc/passwd"):
        assert parse_key(bad) is None, bad


def test_minio_settings_from_the_environment(tmp_path: Path) -> None:
    env = {"MINIO_ENDPOINT": "http://minio.lab:9000", "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk",
           "MINIO_BUCKET": "drugs", "MINIO_SECURE": "true", "MINIO_PUBLIC_ENDPOINT": "https://files.lab",
           "MINIO_REGION": "eu-west-1"}
    settings = load_settings(env=env, state_dir=tmp_path)
    assert (settings.minio_endpoint, settings.minio_access_key, settings.minio_secret_key, settings.minio_bucket,
            settings.minio_secure, settings.minio_public_endpoint, settings.minio_region) == (
        "http://minio.lab:9000", "ak", "sk", "drugs", True, "https://files.lab", "eu-west-1")
    assert load_settings(env={**env, "AIDD_MINIO_BUCKET": "other"}, state_dir=tmp_path).minio_bucket == "other"
    assert split_endpoint("http://minio.lab:9000", True) == ("minio.lab:9000", False)
    assert split_endpoint("https://minio.lab", False) == ("minio.lab", True)
    assert split_endpoint("minio.lab:9000", True) == ("minio.lab:9000", True)
    with pytest.raises(ConfigError, match="AIDD_MINIO_BUCKET"):
        load_settings(env={"AIDD_MINIO_BUCKET": "Bad_Bucket"}, state_dir=tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"AIDD_MAX_FILE_BYTES": "lots"}, state_dir=tmp_path)
    assert str(raised.value).startswith("AIDD_MAX_FILE_BYTES:")


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    local = open_store(Settings(state_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "files"
    remote = open_store(Settings(state_dir=tmp_path, minio_endpoint="https://s3.lab:9000", minio_bucket="b1x"))
    assert isinstance(remote, MinioStore) and remote.bucket == "b1x" and remote.endpoint == "https://s3.lab:9000"
    assert remote.signer is remote.client  # no public endpoint: links name the one the coordinator uses
    public = open_store(Settings(state_dir=tmp_path, minio_endpoint="minio:9000", minio_public_endpoint="https://f.lab"))
    assert isinstance(public, MinioStore) and public.signer is not public.client
