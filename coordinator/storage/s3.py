"""The MinIO / S3 store, through the `minio` client (any S3-protocol server works)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from coordinator.storage.base import (
    CHUNK,
    FileTooLarge,
    LimitedReader,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
)

PART_SIZE = 5 * 1024 * 1024
"""Multipart part size (the S3 minimum): with two parallel parts an upload holds about 15 MB in memory."""
MISSING = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})


def split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """`host:port` and TLS for the client; an `http://` / `https://` URL decides TLS itself."""
    for scheme, tls in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme):].rstrip("/"), tls
    return endpoint.rstrip("/"), secure


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Turn client, network and server failures into StorageUnavailable (ObjectNotFound for a missing key)."""
    try:
        yield
    except S3Error as exc:
        if exc.code in MISSING:
            raise ObjectNotFound(what) from None
        raise StorageUnavailable(f"object store: {what}: {exc.code}: {exc.message}") from None
    except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        raise StorageUnavailable(f"object store: {what}: {type(exc).__name__}: {exc}") from None


DEFAULT_REGION = "us-east-1"
"""MinIO's region unless configured otherwise; links for a public endpoint are signed for it."""


class MinioStore:
    """Objects in one bucket of a MinIO (or other S3) server; created when missing.

    With `public_endpoint`, download links are signed for that address (the host is part of an S3 signature,
    so a link cannot simply be rewritten) by a second client that only signs and never connects.
    """

    def __init__(self, endpoint: str, access_key: str | None, secret_key: str | None, bucket: str,
                 secure: bool = False, region: str | None = None, public_endpoint: str | None = None) -> None:
        host, tls = split_endpoint(endpoint, secure)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=120), maxsize=16, cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
        self.client = Minio(host, access_key=access_key, secret_key=secret_key, secure=tls, region=region,
                            http_client=http)
        self.bucket = bucket
        self.endpoint = f"{'https' if tls else 'http'}://{host}"
        self.signer = self.client
        if public_endpoint:
            public_host, public_tls = split_endpoint(public_endpoint, secure)
            self.signer = Minio(public_host, access_key=access_key, secret_key=secret_key, secure=public_tls,
                                region=region or DEFAULT_REGION)

    @property
    def identity(self) -> str:
        """`s3:` the endpoint and the bucket: coordinators naming the same ones share their files."""
        return f"s3:{self.endpoint}/{self.bucket}"

    def ensure_ready(self) -> None:
        """Create the bucket when it is not there."""
        with _s3_errors(f"bucket {self.bucket}"):
            if not self.client.bucket_exists(self.bucket):
                with contextlib.suppress(S3Error):  # another coordinator may create it at the same moment
                    self.client.make_bucket(self.bucket)
                if not self.client.bucket_exists(self.bucket):
                    raise StorageUnavailable(f"object store: cannot create bucket {self.bucket} at {self.endpoint}")

    def put(self, key: str, stream: BinaryIO, limit: int, length: int = -1) -> ObjectInfo:
        """Upload in parts of PART_SIZE; an upload stopped by the limit is aborted, leaving nothing."""
        if length > limit:
            raise FileTooLarge(key, limit)
        reader = LimitedReader(stream, limit, key)
        with _s3_errors(key):
            self.client.put_object(self.bucket, key, reader, length, part_size=PART_SIZE,  # type: ignore[arg-type]
                                   num_parallel_uploads=2)
        return ObjectInfo(key, reader.count)

    def get(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks (requested now, so a missing key raises here)."""
        with _s3_errors(key):
            response = self.client.get_object(self.bucket, key)

        def chunks() -> Iterator[bytes]:
            try:
                with _s3_errors(key):
                    yield from response.stream(CHUNK)
            finally:
                response.close()
                response.release_conn()
        return chunks()

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size, or None."""
        try:
            with _s3_errors(key):
                info = self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(info.size or 0))

    def _objects(self, prefix: str, recursive: bool) -> list[Object]:
        with _s3_errors(prefix):
            return list(self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`."""
        found = [ObjectInfo(str(o.object_name), int(o.size or 0)) for o in self._objects(prefix, True)
                 if not o.is_dir]
        return sorted(found, key=lambda o: o.key)

    def list_prefixes(self, prefix: str) -> list[str]:
        """The common prefixes one level below `prefix`."""
        return sorted(str(o.object_name) for o in self._objects(prefix, False) if o.is_dir)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (multi-object deletes of up to 1000 keys)."""
        keys = [o.key for o in self.list_objects(prefix)]
        with _s3_errors(prefix):
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in keys]))
        if errors:
            raise StorageUnavailable(f"object store: could not delete {len(errors)} object(s) under {prefix}: "
                                     f"{errors[0].code}: {errors[0].message}")
        return len(keys)

    def presign_get(self, key: str, expires_s: int) -> str:
        """An S3 presigned GET URL (at most 7 days)."""
        with _s3_errors(key):
            return self.signer.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))
