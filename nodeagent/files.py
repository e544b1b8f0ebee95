"""Task files for one attempt: inputs downloaded into its working dir before it starts, outputs uploaded after.

The coordinator names the inputs and gives presigned URLs; outputs are the files in the working dir
that match the task's `outputs` globs, uploaded through the coordinator (which checks size and that the
attempt is still current) before the final report. A short outage is retried; a missing input or a
refused upload fails the attempt with a clear error. While no coordinator answers, an upload is retried for as
long as the agent keeps running tasks without one (its disconnect grace), so a finished task keeps its outputs
through a coordinator restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote

from nodeagent.api import CoordinatorApi, Refused, Unreachable

log = logging.getLogger(__name__)
T = TypeVar("T")


class FileProblem(Exception):
    """A file could not be fetched or stored; `permanent` when retrying the task cannot help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class AttemptGone(Exception):
    """The coordinator says the attempt is no longer current (409): stop without a report."""


def safe_name(name: str) -> bool:
    """A relative path that stays inside the working dir (the coordinator checks too)."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def matching_outputs(work_dir: Path, globs: Sequence[str], skip: Iterable[str] = ()) -> list[str]:
    """Relative paths (with `/`) of regular files under `work_dir` matching any glob, minus `skip`."""
    skipped = set(skip)
    found: set[str] = set()
    for pattern in globs:
        if not safe_name(pattern):
            continue
        for path in work_dir.glob(pattern):
            if path.is_file() and not path.is_symlink():
                name = path.relative_to(work_dir).as_posix()
                if name not in skipped:
                    found.add(name)
    return sorted(found)


async def _retrying(what: str, call: Callable[[], Awaitable[T]], patience: float) -> T:
    """`call()`, retried with backoff (up to 30 s apart) while the coordinator (or the store) is unreachable, for
    up to `patience` seconds."""
    delay, give_up = 1.0, time.monotonic() + patience
    while True:
        try:
            return await call()
        except Unreachable as exc:
            if time.monotonic() + delay > give_up:
                raise FileProblem(f"{what}: {exc}") from None
            log.warning("%s: %s; retrying in %.0fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        except Refused as exc:
            if exc.status == 409:
                raise AttemptGone(str(exc)) from None
            raise FileProblem(f"{what}: {exc}", permanent=exc.status in (400, 403, 404, 413, 422)) from None


class AttemptFiles:
    """Downloads and uploads of one attempt."""

    def __init__(self, api: CoordinatorApi, attempt_id: str, patience: float = 60.0) -> None:
        self.api, self.attempt_id, self.patience = api, attempt_id, patience
        self.listing: dict[str, Any] = {}
        self.inputs: list[str] = []

    async def fetch_inputs(self, work_dir: Path) -> list[str]:
        """Download every input to its name in `work_dir`; returns the names."""
        self.listing = await _retrying("listing the task's files", lambda: self.api.attempt_files(self.attempt_id),
                                       self.patience)
        for entry in self.listing.get("inputs", []):
            name = str(entry.get("name") or "")
            if not safe_name(name):
                raise FileProblem(f"input file name {name!r} is not a safe relative path", permanent=True)
            if not entry.get("url"):
                raise FileProblem(f"input file {name!r} is missing from the store", permanent=True)
            dest = work_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            await _retrying(f"downloading input {name!r}", partial(self.api.download, str(entry["url"]), dest),
                            self.patience)
            self.inputs.append(name)
        return self.inputs

    async def store_outputs(self, work_dir: Path, globs: Sequence[str], skip: Iterable[str]) -> list[str]:
        """Upload the files matching `globs`; returns their names."""
        if not globs:
            return []
        if not self.listing:
            self.listing = await _retrying("listing the task's files",
                                           lambda: self.api.attempt_files(self.attempt_id), self.patience)
        base = str(self.listing["upload_url"])
        names = matching_outputs(work_dir, globs, [*skip, *self.inputs])
        for name in names:
            await _retrying(f"uploading output {name!r}", partial(self.api.upload, base + quote(name), work_dir / name),
                            self.patience)
        return names
