"""The local directory store of the embedded default; its "presigned" URLs are HMAC-signed coordinator URLs."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from coordinator.storage.base import (
    CHUNK,
    FileConflict,
    LimitedReader,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
)
from coordinator.storage.names import name_problem

DOWNLOAD_PATH = "/api/v1/files/"
"""Where the coordinator serves signed downloads of the local store (`coordinator.api.files`)."""
STAGING = ".staging"


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """Turn file-system failures into StorageUnavailable (a full disk is the operator's to fix, not a 500)."""
    try:
        yield
    except (NotADirectoryError, IsADirectoryError, FileExistsError):
        raise FileConflict(what) from None
    except OSError as exc:
        raise StorageUnavailable(f"local file store: {what}: {exc.strerror or exc}") from None


class LocalStore:
    """Objects as plain files under `root` (key = relative path); written to a staging file, then renamed."""

    def __init__(self, root: Path, secret_file: Path) -> None:
        self.root = root
        self.secret_file = secret_file
        self._secret: bytes | None = None

    def ensure_ready(self) -> None:
        """Create the directory and signing secret; drop staging files a crash left behind."""
        with _os_errors(str(self.root)):
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.root / STAGING, ignore_errors=True)
            (self.root / STAGING).mkdir(exist_ok=True)
        self.secret()

    def secret(self) -> bytes:
        """The URL-signing key: generated once, kept (mode 0600) in the state directory."""
        if self._secret is None:
            with _os_errors(str(self.secret_file)):
                self.secret_file.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as out:
                        out.write(secrets.token_hex(32))
                except FileExistsError:
                    pass
                self._secret = self.secret_file.read_text().strip().encode()
        return self._secret

    @property
    def identity(self) -> str:
        """`local:` and a digest of the signing secret. Coordinators sharing this directory share the secret, so
        they share the identity, wherever each mounts it; the secret itself never leaves this process."""
        return "local:" + hashlib.sha256(self.secret()).hexdigest()[:16]

    def _path(self, key: str) -> Path:
        if name_problem(key) is not None:  # keys are built by the coordinator; this keeps them inside root
            raise ObjectNotFound(key)
        return self.root / key

    def put(self, key: str, stream: BinaryIO, limit: int, length: int = -1) -> ObjectInfo:
        """Copy `stream` to a staging file (counting against `limit`), then rename it into place."""
        path = self._path(key)
        with _os_errors(key):
            (self.root / STAGING).mkdir(parents=True, exist_ok=True)
            fd, staged = tempfile.mkstemp(dir=self.root / STAGING)
            try:
                reader, written = LimitedReader(stream, limit, key), 0
                with os.fdopen(fd, "wb") as out:
                    while length < 0 or written < length:
                        chunk = reader.read(CHUNK if length < 0 else min(CHUNK, length - written))
                        if not chunk:
                            break
                        out.write(chunk)
                        written += len(chunk)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(staged)
                raise
        return ObjectInfo(key, written)

    def get(self, key: str) -> Iterator[bytes]:
        """The file's bytes in chunks (opened now, so a missing key raises here)."""
        path = self._path(key)
        try:
            handle = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageUnavailable(f"local file store: {key}: {exc.strerror or exc}") from None

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        return chunks()

    def stat(self, key: str) -> ObjectInfo | None:
        """The file's size, or None."""
        if name_problem(key) is not None:
            return None
        path = self._path(key)
        with _os_errors(key):
            return ObjectInfo(key, path.stat().st_size) if path.is_file() else None

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every file whose key starts with `prefix`."""
        base = self.root / prefix.rpartition("/")[0]
        found: list[ObjectInfo] = []
        with _os_errors(prefix):
            for directory, dirs, files in os.walk(base):
                rel = Path(directory).relative_to(self.root).as_posix()
                if rel == ".":
                    dirs[:] = [d for d in dirs if d != STAGING]
                for name in files:
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        try:
                            size = (Path(directory) / name).stat().st_size
                        except FileNotFoundError:  # deleted meanwhile (retention, another delete): not there
                            continue
                        found.append(ObjectInfo(key, size))
        return sorted(found, key=lambda o: o.key)

    def list_prefixes(self, prefix: str) -> list[str]:
        """The sub-directories directly under `prefix`, as `prefix + name + "/"`."""
        base = self.root / prefix
        with _os_errors(prefix):
            if not base.is_dir():
                return []
            return sorted(f"{prefix}{d.name}/" for d in base.iterdir() if d.is_dir() and d.name != STAGING)

    def delete_prefix(self, prefix: str) -> int:
        """Delete the files under `prefix` and the directories they leave empty."""
        objects = self.list_objects(prefix)
        with _os_errors(prefix):
            for obj in objects:
                path = self.root / obj.key
                path.unlink(missing_ok=True)
                for parent in path.parents:
                    if parent == self.root or not parent.is_relative_to(self.root):
                        break
                    try:
                        parent.rmdir()
                    except OSError:  # not empty: other files still live there
                        break
        return len(objects)

    def signature(self, key: str, expires: int) -> str:
        """The HMAC-SHA256 of a download URL: the key and its expiry time (Unix seconds)."""
        return hmac.new(self.secret(), f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def presign_get(self, key: str, expires_s: int) -> str:
        """`/api/v1/files/KEY?expires=T&signature=S`, valid until T."""
        expires = int(time.time()) + expires_s
        return f"{DOWNLOAD_PATH}{quote(key, safe='/')}?expires={expires}&signature={self.signature(key, expires)}"

    def verify(self, key: str, expires: str, signature: str) -> bool:
        """Whether a download URL was signed here and has not expired."""
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(self.signature(key, int(expires)), signature)
