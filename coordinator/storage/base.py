"""The object-store interface the coordinator uses for task files, and the errors every backend raises."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from coordinator.errors import AiddError

CHUNK = 1024 * 1024
"""Bytes read or written at a time when streaming an object."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key and size in bytes."""

    key: str
    size: int


class FileTooLarge(AiddError):
    """An upload past the per-file limit; nothing of it is kept."""

    status_code = 413

    def __init__(self, what: str, limit: int, field: str | None = None) -> None:
        super().__init__(f"{what} is over the limit of {limit} bytes per file (max_file_bytes)")
        self.limit, self.field = limit, field


class ObjectNotFound(AiddError):
    """No object is stored under this key (never stored, or expired)."""

    status_code = 404

    def __init__(self, key: str) -> None:
        super().__init__(f"no stored file {key!r}")
        self.key = key


class FileConflict(AiddError):
    """A file where a folder of the same name is (or the other way round): `a` and `a/b` cannot both exist."""

    status_code = 409

    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} clashes with another stored file or folder of the same name")
        self.key = key


class StorageUnavailable(AiddError):
    """The object store cannot be reached or refused the operation; the request can be retried."""

    status_code = 503


class ObjectStore(Protocol):
    """Where task files live. Blocking calls: the coordinator runs them on worker threads.

    Keys are chosen by the coordinator (see `coordinator.storage.names`), never by clients.
    Every method raises StorageUnavailable when the backend fails.
    """

    def ensure_ready(self) -> None:
        """Create what the store needs (the bucket, the directory) when missing."""

    def put(self, key: str, stream: BinaryIO, limit: int, length: int = -1) -> ObjectInfo:
        """Store `stream` (read to its end, or `length` bytes) under `key`, replacing any object there.

        Raises:
            FileTooLarge: more than `limit` bytes; nothing is stored then.
        """

    def get(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks. Raises ObjectNotFound."""

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size, or None when there is none."""

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    def list_prefixes(self, prefix: str) -> list[str]:
        """The next level of "folders" under `prefix` (which ends with `/`), e.g. `tasks/<id>/`."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many."""

    def presign_get(self, key: str, expires_s: int) -> str:
        """A URL that downloads the object without other credentials until it expires.

        Absolute (S3), or rooted at the coordinator (`/api/v1/files/...`) for the local store.
        """


class LimitedReader:
    """A read()-able view of a stream that raises FileTooLarge once more than `limit` bytes came through."""

    def __init__(self, stream: BinaryIO, limit: int, what: str) -> None:
        self.stream, self.limit, self.what = stream, limit, what
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise FileTooLarge(self.what, self.limit)
        return data
