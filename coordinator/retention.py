"""Retention: finished tasks older than `task_retention_days` go, with their attempts, logs, files and empty batches,
and the pending reasons of queue shapes recorded as long ago.

The leader's timers start a run every `RETENTION_PERIOD`; a run deletes `RETENTION_BATCH` tasks per transaction,
oldest first, skipping rows another transaction holds, and pauses between batches, so submissions and leases
(which touch other rows) never wait on it for long. Attempts and log lines go with their task (ON DELETE CASCADE,
on indexed foreign keys). Nothing is archived: the window is the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import text

from coordinator.core import Core, utcnow
from coordinator.files import FileService
from coordinator.states import FINISHED

log = logging.getLogger(__name__)
RETENTION_PERIOD = 600.0
"""Seconds between retention runs of the leader (each run goes on until nothing is left to delete)."""
RETENTION_BATCH = 500
"""Tasks deleted per transaction."""
RETENTION_PAUSE = 0.05
"""Seconds between two batches: the rest of the coordinator's work goes first."""

_FINISHED = ", ".join(f"'{s.value}'" for s in sorted(FINISHED))
DELETE_BATCH = text(f"""
WITH doomed AS (
    SELECT id FROM tasks WHERE status IN ({_FINISHED}) AND finished_at < :cutoff
    ORDER BY finished_at LIMIT :batch FOR UPDATE SKIP LOCKED
)
DELETE FROM tasks AS t USING doomed WHERE t.id = doomed.id
RETURNING t.id, (t.input_files <> '[]'::jsonb OR t.outputs <> '[]'::jsonb) AS has_files
""")
"""Delete the oldest finished tasks past the cutoff (their attempts and log lines cascade); says which had files."""
DELETE_EMPTY_BATCHES = text("""
DELETE FROM batches AS b WHERE b.created_at < :cutoff AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.batch_id = b.id)
""")
DELETE_OLD_REASONS = text("""
DELETE FROM pending_reason_changes AS p WHERE p.at < :cutoff AND (p.code IS NULL OR EXISTS (
    SELECT 1 FROM pending_reason_changes n WHERE n.shape_key = p.shape_key AND n.at > p.at))
""")
"""Delete the pending reasons of queue shapes recorded before the cutoff, except each watched shape's last (the
reason in force now)."""


class Retention:
    """Deletes what the retention window no longer keeps; run by the leader in the background."""

    def __init__(self, core: Core, files: FileService | None = None) -> None:
        self.core, self.files = core, files
        self._run: asyncio.Task[int] | None = None

    @property
    def days(self) -> float:
        """The window in days (0: keep everything)."""
        return self.core.settings.task_retention_days

    def start(self, leading: Callable[[], bool]) -> None:
        """Start a run unless one is still going; it stops early once `leading()` turns false."""
        if self.days > 0 and (self._run is None or self._run.done()):
            self._run = asyncio.create_task(self._logged(leading), name="aidd-retention")

    async def stop(self) -> None:
        """Cancel a run under way (the batch in flight rolls back)."""
        if self._run is not None:
            self._run.cancel()
            with contextlib.suppress(BaseException):
                await self._run

    async def _logged(self, leading: Callable[[], bool]) -> int:
        try:
            deleted = await self.run(leading)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store away: the next run goes on where this one stopped
            log.warning("retention: %s: %s", type(exc).__name__, exc)
            return 0
        if deleted:
            log.info("retention: deleted %d task(s) finished over %g days ago", deleted, self.days)
        return deleted

    async def run(self, leading: Callable[[], bool] = lambda: True) -> int:
        """Delete, batch by batch, every finished task past the window, then the empty batches and old pending
        reasons; returns how many tasks went."""
        if self.days <= 0:
            return 0
        cutoff = utcnow() - timedelta(days=self.days)
        deleted = 0
        while leading():
            async with self.core.engine.begin() as conn:
                rows = (await conn.execute(DELETE_BATCH, {"cutoff": cutoff, "batch": RETENTION_BATCH})).all()
                if self.files is not None:  # before the commit: a failure keeps the rows, so a later run retries
                    await self.files.delete_task_files([r.id for r in rows if r.has_files])
            deleted += len(rows)
            if len(rows) < RETENTION_BATCH:
                break
            await asyncio.sleep(RETENTION_PAUSE)
        async with self.core.engine.begin() as conn:
            await conn.execute(DELETE_EMPTY_BATCHES, {"cutoff": cutoff})
            await conn.execute(DELETE_OLD_REASONS, {"cutoff": cutoff})
        return deleted
