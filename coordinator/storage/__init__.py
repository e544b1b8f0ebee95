"""Object storage for task files: MinIO / S3 in production, a local directory in the embedded default."""

from __future__ import annotations

from typing import Protocol

from coordinator.config import Settings
from coordinator.storage.base import (
    FileConflict,
    FileTooLarge,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
)
from coordinator.storage.local import LocalStore

__all__ = ["FileConflict", "FileTooLarge", "LocalStore", "NamedStore", "ObjectInfo", "ObjectNotFound",
           "ObjectStore", "StorageUnavailable", "open_store"]


class NamedStore(ObjectStore, Protocol):
    """A store that can say which one it is, so coordinators sharing a Redis can tell whether they share it too."""

    @property
    def identity(self) -> str:
        """The same string on every coordinator that reaches the same files (no secret in it)."""


def open_store(settings: Settings) -> NamedStore:
    """MinIO when `minio_endpoint` is set, else `files/` under the state directory. Connects to nothing yet."""
    if settings.minio_endpoint:
        from coordinator.storage.s3 import MinioStore  # the minio client is imported only when used

        return MinioStore(settings.minio_endpoint, settings.minio_access_key, settings.minio_secret_key,
                          settings.minio_bucket, settings.minio_secure, settings.minio_region,
                          settings.minio_public_endpoint)
    return LocalStore(settings.state_dir / "files", settings.state_dir / "files.key")
