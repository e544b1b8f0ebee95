"""Pending reasons over time: the leader writes a row when the reason of a queue shape changes, and a task's
timeline reads its shape's rows from the times it waited.

Reasons are decided per queue shape (`pending.py`), so their history is kept per shape too: with 100 000 pending
tasks the leader decides a few shapes a second (from the snapshot the API shares) and writes a row only on a change,
a handful an hour. A new reason is written once it has held for SETTLE_S, with the time it was first seen, so a
worker that has room for the moment between finishing one task and leasing the next does not write `ready` and
`busy` rows every second. A shape stays watched for FORGET_S after its last queued task, so a queue that empties and
fills again keeps one history; then a row without a code closes it, and a later task of that shape is never shown
a reason nobody checked since. A new leader starts from the table's open shapes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.core import utcnow
from coordinator.models import PendingReasonChange
from coordinator.pending import PendingReason, PendingReasons, Shape

SETTLE_S = 2.0
"""How long a new reason of a watched shape must hold before it is written."""
FORGET_S = 3600.0
"""How long a shape stays watched after its queue last held a task."""
MAX_CHANGES = 200
"""The most reason changes one task's timeline shows."""


def shape_key(shape: Shape) -> str:
    """The shape as the table keys it: `service<TAB>group<TAB>needs` (needs as the queue keys spell them)."""
    return f"{shape.service}\t{shape.group}\t{shape.needs}"


def shape_of(key: str) -> Shape:
    service, group, needs = key.split("\t", 2)
    return Shape.of_queue(service, group, needs)


@dataclass
class Watched:
    """A shape the leader decides at each look: the code it last wrote and a new reason not yet settled."""

    shape: Shape
    code: str | None
    queued_at: float
    """Monotonic time its queue last held a task."""
    new: tuple[PendingReason, datetime, float] | None = None
    """A reason other than `code`: it, when first seen, and that in monotonic seconds."""


class ReasonHistory:
    """The leader's record of pending reasons per queue shape (see the module's docstring)."""

    def __init__(self, reasons: PendingReasons, settle_s: float = SETTLE_S, forget_s: float = FORGET_S) -> None:
        self.reasons, self.settle_s, self.forget_s = reasons, settle_s, forget_s
        self._watched: dict[str, Watched] | None = None

    def reset(self) -> None:
        """This process no longer leads: a later term starts again from the table (another leader wrote it)."""
        self._watched = None

    async def record(self) -> int:
        """One look (the leader's timers; reasons come from a snapshot at most a second old): write a row for each
        watched shape whose reason changed and held, and close the shapes without tasks for FORGET_S. Returns the
        rows written."""
        engine = self.reasons.core.engine
        mono, now = time.monotonic(), utcnow()
        if self._watched is None:
            self._watched = await self._open_shapes(mono)
        for shape, _size in (await self.reasons.queues()).values():
            key = shape_key(shape)
            if key in self._watched:
                self._watched[key].queued_at = mono
            else:
                self._watched[key] = Watched(shape, None, mono)
        if not self._watched:
            return 0  # nothing has waited for an hour: no snapshot of the workers to take
        snap = await self.reasons.snapshot(fresh=True)
        rows: list[dict[str, Any]] = []
        for key, w in list(self._watched.items()):
            if mono - w.queued_at > self.forget_s:
                del self._watched[key]
                rows.append({"shape_key": key, "code": None, "message": "", "at": now})
                continue
            reason = self.reasons.of_shape(snap, w.shape)
            if reason.code.value == w.code:
                w.new = None
                continue
            if w.new is None or w.new[0].code != reason.code:
                w.new = (reason, now, mono)
            first, at, since = w.new
            if w.code is None or mono - since >= self.settle_s:  # a shape new to the watch is written at once
                rows.append({"shape_key": key, "code": first.code.value, "message": first.message, "at": at})
                w.code, w.new = first.code.value, None
        if rows:
            async with engine.begin() as conn:
                await conn.execute(insert(PendingReasonChange), rows)
        return len(rows)

    async def _open_shapes(self, mono: float) -> dict[str, Watched]:
        """The shapes whose last row written has a code (a previous leader watched them), each watched afresh."""
        t = PendingReasonChange
        async with self.reasons.core.engine.connect() as conn:
            last = (await conn.execute(select(t.shape_key, t.code).where(
                t.id.in_(select(func.max(t.id)).group_by(t.shape_key))))).all()
        return {row.shape_key: Watched(shape_of(row.shape_key), row.code, mono) for row in last if row.code}


async def changes(conn: AsyncConnection, shape: Shape, start: datetime, end: datetime) -> Sequence[Any]:
    """The shape's reason rows that tell why it waited from `start` to `end`, oldest first: the one in force at
    `start`, then each change up to `end` — the latest MAX_CHANGES of them, since the later ones say why it waits
    now."""
    t = PendingReasonChange
    key = shape_key(shape)
    cols = (t.code, t.message, t.at)
    before = (await conn.execute(select(*cols).where(t.shape_key == key, t.at <= start)
                                 .order_by(t.at.desc(), t.id.desc()).limit(1))).all()
    during = (await conn.execute(select(*cols).where(t.shape_key == key, t.at > start, t.at <= end)
                                 .order_by(t.at.desc(), t.id.desc()).limit(MAX_CHANGES))).all()
    return [*before, *reversed(during)]
