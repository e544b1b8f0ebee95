"""The worker identity an agent keeps across restarts: its worker id and token, in a file in its work dir.

An agent that restarts (a crash, an upgrade, `systemctl restart`) presents them when it registers and takes its
identity back at once, even before the coordinator noticed the old process was gone: one host stays one worker
(one row in the console, one `worker` label in the metrics). Without the file (a reboot emptied the temp dir)
the coordinator still gives back an offline worker of the same hostname.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
FILE = "worker.json"


def load_identity(work_dir: Path, hostname: str) -> dict[str, str]:
    """`worker_id` and `worker_token` this host had, for the registration body; empty when unknown."""
    try:
        saved = json.loads((work_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("hostname") != hostname:
        return {}
    return {k: str(saved[k]) for k in ("worker_id", "worker_token") if isinstance(saved.get(k), str)}


def save_identity(work_dir: Path, hostname: str, worker_id: str, token: str) -> None:
    """Keep the identity for the next start (readable by this user only); a failure only costs that."""
    path = work_dir / FILE
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"hostname": hostname, "worker_id": worker_id, "worker_token": token}, out)
        os.replace(partial, path)
    except OSError as exc:
        log.warning("cannot keep the worker identity in %s (%s): a restart will register anew", path, exc)
        with contextlib.suppress(OSError):
            partial.unlink()
