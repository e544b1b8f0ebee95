"""Task files: inputs stored at submission, outputs uploaded by agents, listings with presigned URLs, retention.

Store calls block, so they run on worker threads. Keys are built here (see `coordinator.storage.names`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urljoin

from sqlalchemy import func, select

from coordinator.core import Core, utcnow
from coordinator.errors import InvalidInput, StaleAttempt, TaskNotFound
from coordinator.models import Attempt, Task
from coordinator.schemas import TaskSpec
from coordinator.states import FINISHED, TaskStatus
from coordinator.storage import ObjectInfo, ObjectStore, StorageUnavailable
from coordinator.storage.names import (
    TASKS,
    check_name,
    input_key,
    output_key,
    parse_key,
    task_prefix,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
EXPIRY_CHUNK = 200
"""Tasks whose files are deleted in one transaction (their rows are share-locked meanwhile)."""


@dataclass(frozen=True)
class NamedFile:
    """A file to store under a task: its relative name and an open, rewound stream of `size` bytes."""

    name: str
    stream: BinaryIO
    size: int


@dataclass(frozen=True)
class CurrentAttempt:
    """The running attempt an agent asks about: its task, number (the key folder), inputs and output globs."""

    task_id: uuid.UUID
    attempt_id: uuid.UUID
    number: int
    input_files: list[str]
    outputs: list[str]


def _local_names_clash(names: Sequence[str]) -> str | None:
    """A name given twice, or used both as a file and as a folder (`a` and `a/b`), if any."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                return name
    return None


class FileService:
    """The coordinator's task files over one ObjectStore."""

    def __init__(self, core: Core, store: ObjectStore) -> None:
        self.core, self.store = core, store
        self.settings = core.settings
        self._ready = False
        self._expiry: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args))

    async def start(self) -> None:
        """Prepare the store (bucket or directory); when it is down, say so and try again on first use."""
        try:
            await self._ensure_ready()
        except StorageUnavailable as exc:
            log.warning("task files unavailable for now: %s", exc)

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await self._run(self.store.ensure_ready)
            self._ready = True

    async def close(self) -> None:
        """Stop a running expiry."""
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None

    # -- submission ---------------------------------------------------------------------------------

    async def check_spec(self, spec: TaskSpec, prefix: str = "", uploads: Sequence[str] = ()) -> None:
        """Refuse (422 naming the field) unsafe output globs, and input_files that are not stored task files.

        `uploads` are the names of files sent with the task; all local names must be distinct.
        """
        for i, pattern in enumerate(spec.outputs):
            check_name(pattern, f"{prefix}outputs[{i}]")
        names = list(uploads)
        for i, key in enumerate(spec.input_files):
            field = f"{prefix}input_files[{i}]"
            parsed = parse_key(key)
            if parsed is None:
                raise InvalidInput(field, f"{key!r} is not a stored task file (tasks/<id>/inputs/NAME or "
                                          "tasks/<id>/attempts/<n>/outputs/PATH)")
            if await self._run(self.store.stat, key) is None:
                raise InvalidInput(field, f"no stored file {key!r}")
            names.append(parsed.name)
        clash = _local_names_clash(names)
        if clash is not None:
            raise InvalidInput(f"{prefix}input_files", f"two inputs would be written to {clash!r}")

    async def store_inputs(self, task_id: uuid.UUID, files: Sequence[NamedFile]) -> list[str]:
        """Store a new task's uploaded files under `tasks/{id}/inputs/`; on failure none are kept."""
        if files:
            await self._ensure_ready()
        keys: list[str] = []
        try:
            for f in files:
                key = input_key(task_id, f.name)
                await self._run(self.store.put, key, f.stream, self.settings.max_file_bytes, f.size)
                keys.append(key)
        except BaseException:
            await self.discard(task_id)
            raise
        return keys

    async def discard(self, task_id: uuid.UUID) -> None:
        """Delete every file of a task whose submission failed (best effort, finished even if cancelled).

        The files stay when the task exists after all (its commit went through before the failure) or when
        PostgreSQL cannot tell: a stray file costs less than a task that runs without its inputs.
        """
        await asyncio.shield(self._discard(task_id))

    async def _discard(self, task_id: uuid.UUID) -> None:
        try:
            async with self.core.engine.connect() as conn:
                if (await conn.execute(select(Task.id).where(Task.id == task_id))).first() is not None:
                    return
        except Exception as exc:  # PostgreSQL away: keep the files
            log.warning("kept the files of task %s: cannot tell whether it was stored (%s: %s)", task_id,
                        type(exc).__name__, exc)
            return
        try:
            await self._run(self.store.delete_prefix, task_prefix(task_id))
        except StorageUnavailable as exc:
            log.warning("could not remove the files of unsubmitted task %s: %s", task_id, exc)

    # -- listings -----------------------------------------------------------------------------------

    def _entries(self, named: Sequence[tuple[str, str, ObjectInfo | None]]) -> list[dict[str, Any]]:
        """Name, key, size and a presigned URL (None when the file is gone) of each file. Blocking."""
        expiry = self.settings.presign_expiry_s
        return [{"name": name, "key": key, "size": info.size if info else None,
                 "url": self.store.presign_get(key, expiry) if info else None} for name, key, info in named]

    async def _inputs(self, input_files: Sequence[str]) -> list[dict[str, Any]]:
        named = []
        for key in input_files:
            parsed = parse_key(key)
            named.append((parsed.name if parsed else key, key, await self._run(self.store.stat, key)))
        return await self._run(self._entries, named)

    async def task_files(self, task_id: uuid.UUID, base_url: str) -> dict[str, Any]:
        """A task's inputs and each attempt's outputs with sizes and download URLs."""
        async with self.core.engine.connect() as conn:
            task = (await conn.execute(select(Task.input_files).where(Task.id == task_id))).first()
            if task is None:
                raise TaskNotFound(str(task_id))
            attempts = (await conn.execute(select(Attempt.id, Attempt.number, Attempt.end_reason)
                                           .where(Attempt.task_id == task_id).order_by(Attempt.number))).all()
        inputs = await self._inputs(task.input_files)
        stored = await self._run(self.store.list_objects, f"{task_prefix(task_id)}attempts/")
        by_number: dict[int, list[tuple[str, str, ObjectInfo | None]]] = {}
        for info in stored:
            parsed = parse_key(info.key)
            if parsed is not None and parsed.attempt is not None:
                by_number.setdefault(parsed.attempt, []).append((parsed.name, info.key, info))
        known = {a.number: a for a in attempts}
        views = []
        for number in sorted(set(known) | set(by_number)):
            outputs = await self._run(self._entries, by_number.get(number, []))
            row = known.get(number)
            views.append({"number": number, "attempt_id": row.id if row else None,
                          "end_reason": row.end_reason if row else None, "outputs": outputs})
        result = {"task_id": task_id, "expires_in_s": self.settings.presign_expiry_s, "inputs": inputs,
                  "attempts": views}
        return _absolute(result, base_url)

    # -- agents -------------------------------------------------------------------------------------

    async def current_attempt(self, worker_id: uuid.UUID, attempt_id: uuid.UUID) -> CurrentAttempt:
        """The worker's own running attempt, or StaleAttempt (409) when it is not (any more)."""
        async with self.core.engine.connect() as conn:
            row = (await conn.execute(
                select(Task.id, Task.input_files, Task.outputs, Attempt.number)
                .join(Attempt, Attempt.id == Task.attempt_id)
                .where(Task.attempt_id == attempt_id, Task.worker_id == worker_id,
                       Task.status == TaskStatus.RUNNING.value))).first()
            if row is None:
                task_id = (await conn.execute(select(Attempt.task_id).where(Attempt.id == attempt_id))).scalar()
                raise StaleAttempt(str(task_id or "-"), str(attempt_id))
        return CurrentAttempt(row.id, attempt_id, row.number, list(row.input_files), list(row.outputs))

    async def attempt_files(self, worker_id: uuid.UUID, attempt_id: uuid.UUID, base_url: str) -> dict[str, Any]:
        """What an agent needs for its attempt: input download URLs, the output globs and where to upload."""
        attempt = await self.current_attempt(worker_id, attempt_id)
        result = {"task_id": attempt.task_id, "attempt_id": attempt_id, "attempt": attempt.number,
                  "inputs": await self._inputs(attempt.input_files), "outputs": attempt.outputs,
                  "upload_url": f"/api/v1/workers/{worker_id}/attempts/{attempt_id}/outputs/",
                  "max_file_bytes": self.settings.max_file_bytes}
        return _absolute(result, base_url)

    async def put_output(self, worker_id: uuid.UUID, attempt_id: uuid.UUID, path: str,
                         stream: BinaryIO, size: int) -> dict[str, Any]:
        """Store one output file of the worker's running attempt under `attempts/{n}/outputs/PATH`."""
        check_name(path, "path")
        attempt = await self.current_attempt(worker_id, attempt_id)
        await self._ensure_ready()
        key = output_key(attempt.task_id, attempt.number, path)
        info = await self._run(self.store.put, key, stream, self.settings.max_file_bytes, size)
        return {"name": path, "key": key, "size": info.size, "attempt": attempt.number}

    # -- retention ----------------------------------------------------------------------------------

    def expire_in_background(self) -> None:
        """Start `expire_finished` unless a run is still going (called by the leader's timers)."""
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.create_task(self._expire_logged(), name="aidd-file-expiry")

    async def _expire_logged(self) -> None:
        try:
            count = await self.expire_finished()
            if count:
                log.info("deleted the files of %d task(s) finished over %s days ago", count,
                         self.settings.file_retention_days)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store or the database is down: next hour again
            log.warning("file expiry: %s: %s", type(exc).__name__, exc)

    async def expire_finished(self) -> int:
        """Delete the files of tasks finished more than file_retention_days ago; returns how many tasks.

        Never touches pending or running tasks (a task retried meanwhile is pending again), nor files
        that an unfinished task names in its input_files. Rows are share-locked while their files go,
        so a concurrent retry waits and then sees the files gone.
        """
        days = self.settings.file_retention_days
        if days <= 0:
            return 0
        ids = []
        for prefix in await self._run(self.store.list_prefixes, TASKS):
            try:
                ids.append(uuid.UUID(prefix[len(TASKS):].rstrip("/")))
            except ValueError:
                continue
        if not ids:
            return 0
        cutoff = utcnow() - timedelta(days=days)
        keep = await self._referenced()
        expired = 0
        for start in range(0, len(ids), EXPIRY_CHUNK):
            async with self.core.engine.begin() as conn:
                old = (await conn.execute(select(Task.id).where(
                    Task.id.in_(ids[start:start + EXPIRY_CHUNK]), Task.status.in_([s.value for s in FINISHED]),
                    Task.finished_at < cutoff).with_for_update(read=True, skip_locked=True))).scalars().all()
                for task_id in old:
                    if task_id not in keep:
                        await self._run(self.store.delete_prefix, task_prefix(task_id))
                        expired += 1
        return expired

    async def _referenced(self) -> set[uuid.UUID]:
        """The tasks whose files an unfinished task names in its input_files (they must stay)."""
        unfinished = [TaskStatus.PENDING.value, TaskStatus.RUNNING.value]
        async with self.core.engine.connect() as conn:
            referenced = (await conn.execute(select(func.jsonb_array_elements_text(Task.input_files)).where(
                Task.status.in_(unfinished), func.jsonb_array_length(Task.input_files) > 0).distinct())).scalars()
            return {parsed.task_id for parsed in map(parse_key, referenced) if parsed is not None}

    async def delete_task_files(self, task_ids: Sequence[uuid.UUID]) -> int:
        """Delete every file of these tasks (their records are going: see `retention`), except files an
        unfinished task still names as inputs. Returns how many tasks' files went."""
        if not task_ids:
            return 0
        keep = await self._referenced()
        gone = [task_id for task_id in task_ids if task_id not in keep]
        for task_id in gone:
            await self._run(self.store.delete_prefix, task_prefix(task_id))
        return len(gone)


def _absolute(view: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Make the coordinator-relative URLs of a view absolute (S3 presigned URLs already are)."""
    for key in ("url", "upload_url"):
        if isinstance(view.get(key), str):
            view[key] = urljoin(base_url, view[key])
    for entry in view.get("inputs", []):
        _absolute(entry, base_url)
    for attempt in view.get("attempts", []):
        for entry in attempt["outputs"]:
            _absolute(entry, base_url)
    return view
