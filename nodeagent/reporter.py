"""Task events to the coordinator in batches: logs at most every 0.5 s or 500 lines, `started` within 0.1 s, the
rest at once.

A `started` waits that long so that a short task's start goes in the same report as its end (one request and
one PostgreSQL statement instead of two of each); a longer task's start is only that much later on record.

Events keep their order per attempt (log lines before the final event, so they are still accepted).
While the coordinator is away (or slower than a flood of output) everything waits in a bounded buffer
and is retried with backoff; past the bound the oldest log lines of the attempt that holds the most go
(a note says how many), so a flooding task drops its own lines, never its neighbours'; no started/final
event is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiddwire import FINAL_EVENTS, EndReason, EventKind
from nodeagent.api import Refused, Unreachable, WorkerUnknown

log = logging.getLogger(__name__)
Send = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
STARTED_WAIT_S = 0.1
"""How long a `started` event may wait for its attempt's end (or any other send) before it goes alone."""


class Reporter:
    """Buffers events and log lines; `run` sends them; `on_refused(attempt_id)` hears about 409s."""

    def __init__(self, send: Send, on_refused: Callable[[str], None], on_unknown: Callable[[], Awaitable[None]],
                 interval: float = 0.5, batch_lines: int = 500, max_lines: int = 20_000) -> None:
        self.send, self.on_refused, self.on_unknown = send, on_refused, on_unknown
        self.interval, self.batch_lines, self.max_lines = interval, batch_lines, max_lines
        self.lines_per_event = 1000  # the coordinator takes up to 10 000 lines in one event
        self._events: list[dict[str, Any]] = []
        self._sending: list[dict[str, Any]] = []
        self._open_logs: dict[str, dict[str, Any]] = {}  # attempt -> its unsent "log" event still taking lines
        self._lines = 0
        self._urgent = False
        self._due_at: float | None = None
        """When the events waiting (log lines, `started`) must go even if nothing urgent comes."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Events waiting to be sent."""
        return len(self._events)

    def holding(self) -> set[str]:
        """Tasks whose final event waits to be sent or is on its way: to the coordinator they still run here."""
        return {e["task_id"] for e in (*self._sending, *self._events) if e["event"] in FINAL_EVENTS}

    def event(self, event: dict[str, Any]) -> None:
        """Queue a non-log event (started, progress, succeeded, failed, handback); sent promptly."""
        attempt = event["attempt_id"]
        self._open_logs.pop(attempt, None)
        if event["event"] == EventKind.PROGRESS:  # only the latest unsent progress of an attempt matters
            self._events = [e for e in self._events
                            if not (e["attempt_id"] == attempt and e["event"] == EventKind.PROGRESS)]
        self._events.append(event)
        self._idle.clear()
        if event["event"] != EventKind.STARTED:
            self._urgent = True
            self._wake.set()
        elif self._due(STARTED_WAIT_S):  # else the sender's clock runs for it already: no wake-up per task
            self._wake.set()

    def _due(self, within: float) -> bool:
        """What waits must go within `within` seconds from now (or sooner, if it already had to); whether that
        moved the time it must go by."""
        at = time.monotonic() + within
        if self._due_at is not None and self._due_at <= at:
            return False
        self._due_at = at
        return True

    def log(self, task_id: str, attempt_id: str, stream: str, line: str) -> None:
        """Queue one output line."""
        batch = self._open_logs.get(attempt_id)
        if batch is None or len(batch["lines"]) >= self.lines_per_event:
            batch = {"task_id": task_id, "attempt_id": attempt_id, "event": EventKind.LOG, "lines": [], "dropped": 0}
            self._open_logs[attempt_id] = batch
            self._events.append(batch)
        batch["lines"].append({"stream": stream, "line": line})
        self._lines += 1
        while self._lines > self.max_lines:
            self._drop_lines()
        self._idle.clear()
        if self._due_at is None:  # the first waiting line starts the 0.5 s clock
            self._due(self.interval)
            self._wake.set()
        elif self._lines >= self.batch_lines:  # wake the sender only when it has something to decide
            self._wake.set()

    def _drop_lines(self) -> None:
        """Back under the bound (and a tenth below it, so a flood does not come here for every line): drop the
        oldest waiting lines of the attempt that holds the most."""
        held: dict[str, int] = {}
        for event in self._events:
            if event["event"] == EventKind.LOG:
                held[event["attempt_id"]] = held.get(event["attempt_id"], 0) + len(event["lines"])
        biggest = max(held, key=held.__getitem__)
        excess = min(held[biggest], self._lines - self.max_lines + self.max_lines // 10)
        for event in self._events:
            if excess <= 0:
                break
            if event["event"] == EventKind.LOG and event["attempt_id"] == biggest and event["lines"]:
                cut = min(excess, len(event["lines"]))
                del event["lines"][:cut]
                event["dropped"] += cut
                self._lines -= cut
                excess -= cut

    async def flushed(self, timeout: float) -> bool:
        """Wait until everything queued has been sent (or refused); False on timeout."""
        self._urgent = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        """Send forever: at once for urgent events, else when what waits is due or 500 lines wait; backoff when
        away."""
        delay = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._events:
                self._idle.set()
                continue
            due = (self._due_at or 0.0) - time.monotonic()
            if not self._urgent and self._lines < self.batch_lines and due > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due)
                self._wake.set()  # look again: more lines, an urgent event, or time is up
                continue
            batch = self._sending = self._take()
            try:
                await self._deliver(batch)
                delay = 0.5
            except Unreachable as exc:
                self._put_back(batch)
                log.warning("reports: coordinator unreachable (%s); %d events wait, retry in %.1fs",
                            exc, len(self._events), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except WorkerUnknown:
                self._put_back(batch)
                await self.on_unknown()
            finally:
                self._sending = []
            self._wake.set()

    def _take(self, max_events: int = 500, max_chars: int = 1_000_000) -> list[dict[str, Any]]:
        """The next request's worth of events (bounded so it stays under the coordinator's body limit)."""
        count = chars = 0
        for event in self._events:
            if count >= max_events or chars >= max_chars:
                break
            chars += sum(len(line["line"]) for line in event.get("lines", ()))
            count += 1
        batch = self._events[:count]
        del self._events[:count]  # at once: one pop from the front each moved every event behind it
        for event in batch:
            if self._open_logs.get(event["attempt_id"]) is event:
                del self._open_logs[event["attempt_id"]]  # later lines start a new event
        self._recount()
        return batch

    def _recount(self) -> None:
        self._lines = sum(len(e.get("lines", ())) for e in self._events)
        self._urgent = any(e["event"] not in (EventKind.LOG, EventKind.STARTED) for e in self._events)
        self._due_at = None
        if any(e["event"] == EventKind.STARTED for e in self._events):
            self._due(STARTED_WAIT_S)
        if self._lines:
            self._due(self.interval)

    def _put_back(self, batch: list[dict[str, Any]]) -> None:
        self._events[:0] = batch
        self._recount()
        while self._lines > self.max_lines:
            self._drop_lines()

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Send one batch; one refused as a whole (413/422) is split until the bad event is alone."""
        try:
            results = await self.send([_wire(e) for e in batch])
        except Refused as exc:
            if len(batch) > 1:
                middle = len(batch) // 2
                await self._deliver(batch[:middle])
                await self._deliver(batch[middle:])
                return
            event = batch[0]
            log.error("coordinator refused a %s report for task %s: %s", event["event"], event["task_id"], exc)
            if event["event"] == EventKind.SUCCEEDED:  # the outcome must not be lost: report it as a failure instead
                await self._deliver([{**event, "event": EventKind.FAILED, "result": None, "reason": EndReason.PERMANENT,
                                      "error": f"the coordinator refused the result: {exc}"}])
            return
        for result in results:
            if result.get("status") == 409:
                self.on_refused(str(result.get("attempt_id")))


def _wire(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the API takes it (a note in front of lines dropped while the coordinator was away)."""
    wire = {k: v for k, v in event.items() if k != "dropped" and v is not None}
    if event.get("dropped"):
        note = {"stream": "stderr", "line": f"[aidd-agent: {event['dropped']} earlier lines dropped: more output "
                                            "than the agent buffers while the coordinator catches up]"}
        wire["lines"] = [note, *event["lines"]]
    return wire
