"""The suite's own ground truth, kept outside the system under test, and the figures computed from it.

Two sources: the client's ledger (every submission the coordinator acknowledged with 201) and the
records each task attempt writes itself (`recorder.py`). They are compared with what PostgreSQL,
the system's durable record, says at the end of a scenario.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.faults.recorder import TICK
from tests.support.api import Api

RECORDER = Path(__file__).with_name("recorder.py")
FINISHED = frozenset({"succeeded", "failed", "cancelled", "timeout"})


def recorded_task(records: Path, seconds: float, child: bool = False, loud: bool = False,
                  **fields: Any) -> dict[str, Any]:
    """A shell task running the recorder for `seconds` (its work done by a forked grandchild with `child`,
    printing a line every tick with `loud`)."""
    flags = [name for name, on in (("child", child), ("loud", loud)) if on]
    argv = [sys.executable, "-S", "-I", str(RECORDER), str(records), f"{seconds:g}", *flags]
    return {"service": "faults", "task_type": "shell", "name": "recorded", "input_params": {"argv": argv},
            "resources": {"cpu": 0}, **fields}  # it sleeps: slots, not cores, bound how many run at once


@dataclass
class Ledger:
    """Every submission the coordinator acknowledged (201), with when; thread-safe."""

    accepted: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def submit(self, api: Api, bodies: list[dict[str, Any]]) -> list[str]:
        """Submit and record; a failed submission (error, 4xx/5xx) is counted and re-raised."""
        try:
            ids = api.submit_batch(bodies)
        except httpx.HTTPError:
            with self._lock:
                self.refused += 1
            raise
        now = time.time()
        with self._lock:
            self.accepted.update(dict.fromkeys(ids, now))
        return ids

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.accepted)


class Submitter(threading.Thread):
    """Load during a fault: submits `per_batch` tasks every `period` seconds until stopped; errors are counted
    (an unacknowledged submission is not in the ledger, so it may exist or not)."""

    def __init__(self, ledger: Ledger, api: Api, body: Callable[[], dict[str, Any]], per_batch: int = 10,
                 period: float = 0.5) -> None:
        super().__init__(name="fault-submitter", daemon=True)
        self.ledger, self.api, self.body, self.per_batch, self.period = ledger, api, body, per_batch, period
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            try:
                self.ledger.submit(self.api, [self.body() for _ in range(self.per_batch)])
            except httpx.HTTPError:
                continue

    def finish(self, timeout: float = 60.0) -> None:
        self._stop_event.set()
        self.join(timeout)


@dataclass
class Execution:
    """One attempt as its own records tell it: when it started and when it was last seen alive."""

    task: str
    attempt: str
    host: str
    start: float
    last: float
    ended: bool = False
    pids: set[int] = field(default_factory=set)
    found_dead: set[str] = field(default_factory=set)
    """Earlier attempts of its task that had no process left when it started (the recorder looked)."""


def read_records(records: Path) -> dict[str, Execution]:
    """Every attempt that recorded itself, by attempt id (a half-written last line is skipped)."""
    executions: dict[str, Execution] = {}
    for path in records.glob("*.jsonl"):
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            ex = executions.setdefault(rec["attempt"], Execution(rec["task"], rec["attempt"], rec["host"],
                                                                 rec["t"], rec["t"]))
            ex.start, ex.last = min(ex.start, rec["t"]), max(ex.last, rec["t"])
            ex.pids.add(int(rec["pid"]))
            ex.ended = ex.ended or (rec["event"] == "end" and rec["role"] in ("main", "child"))
            ex.found_dead.update(rec.get("dead", ()))
    return executions


def overlap_seconds(runs: Iterable[Execution]) -> float:
    """Seconds two attempts of one task ran at the same time, summed over every pair.

    An attempt that did not record its end was killed within one tick of its last record; it is taken
    to have lived that whole tick (so the figure errs on the side of overlap), unless a later attempt found
    none of its processes left when it started."""
    def end(ex: Execution, other: Execution) -> float:
        if ex.ended:
            return ex.last
        if ex.attempt in other.found_dead:  # gone by the other's start
            return min(ex.last + TICK, max(ex.last, other.start))
        return ex.last + TICK
    return sum(max(0.0, min(end(a, b), end(b, a)) - max(a.start, b.start))
               for a, b in itertools.combinations(list(runs), 2))


@dataclass
class Figures:
    """What one scenario measured; `lost` and `duplicate_outcomes` must be 0."""

    scenario: str
    accepted: int
    lost: int
    duplicate_outcomes: int
    executions: int | None
    """Attempts that recorded themselves (None: the scenario's tasks keep no record)."""
    duplicate_executions: int | None
    overlap_s: float | None
    stale_refused: int
    detect_s: float | None
    recover_s: float | None
    wall_s: float
    outcomes: dict[str, int]
    phantom_successes: int = 0
    note: str = ""

    def row(self) -> dict[str, Any]:
        return asdict(self)


def system_view(conninfo: str, ids: list[str]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """What PostgreSQL says of these tasks: each task row, and every attempt of them."""
    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT id::text, status, attempts, worker_losses, error, attempt_id::text FROM tasks "
                    "WHERE id = ANY(%s::uuid[])", (ids,))
        tasks = {row["id"]: row for row in cur.fetchall()}
        cur.execute("SELECT task_id::text, id::text, number, worker_id::text, end_reason, leased_at, ended_at "
                    "FROM attempts WHERE task_id = ANY(%s::uuid[]) ORDER BY number", (ids,))
        attempts = list(cur.fetchall())
    return tasks, attempts


def unfinished(conninfo: str, ids: list[str]) -> list[str]:
    """The tasks that PostgreSQL does not hold as finished (missing ones included)."""
    tasks, _ = system_view(conninfo, ids)
    return [i for i in ids if tasks.get(i, {}).get("status") not in FINISHED]


def measure(scenario: str, conninfo: str, ledger: Ledger, records: Path | None, stale_refused: int,
            detect_s: float | None, recover_s: float | None, wall_s: float, note: str = "") -> Figures:
    """Compare the ledger and the attempts' own records with PostgreSQL."""
    ids = ledger.ids()
    tasks, attempts = system_view(conninfo, ids)
    executions = read_records(records) if records is not None else {}
    by_task: dict[str, list[Execution]] = defaultdict(list)
    for ex in executions.values():
        by_task[ex.task].append(ex)
    outcomes: dict[str, int] = defaultdict(int)  # accepted outcomes per task: must be at most one
    for attempt in attempts:
        if attempt["end_reason"] == "succeeded":
            outcomes[attempt["task_id"]] += 1
    for task in tasks.values():
        if task["status"] in ("failed", "cancelled", "timeout"):
            outcomes[task["id"]] += 1
    succeeded = [a["id"] for a in attempts if a["end_reason"] == "succeeded"]
    phantom = 0 if records is None else sum(1 for a in succeeded if not (a in executions and executions[a].ended))
    return Figures(
        scenario=scenario, accepted=len(ids),
        lost=sum(1 for i in ids if tasks.get(i, {}).get("status") not in FINISHED),
        duplicate_outcomes=sum(max(0, n - 1) for n in outcomes.values()),
        executions=None if records is None else len(executions),
        duplicate_executions=None if records is None else sum(len(runs) - 1 for runs in by_task.values()),
        overlap_s=None if records is None else round(sum(overlap_seconds(runs) for runs in by_task.values()), 2),
        stale_refused=stale_refused, detect_s=_rounded(detect_s), recover_s=_rounded(recover_s),
        wall_s=round(wall_s, 1), outcomes=dict(Counter(t["status"] for t in tasks.values())),
        phantom_successes=phantom, note=note)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


COLUMNS = [("scenario", 34), ("accepted", 8), ("lost", 4), ("duplicate_outcomes", 8), ("executions", 10),
           ("duplicate_executions", 8), ("overlap_s", 9), ("stale_refused", 7), ("detect_s", 8), ("recover_s", 9),
           ("wall_s", 6)]
HEADERS = {"duplicate_outcomes": "dup.out", "duplicate_executions": "dup.exec", "stale_refused": "stale"}


def table(figures: Iterable[Figures]) -> str:
    """A plain-text table of the figures, one row per scenario (outcomes and notes after it)."""
    def cell(value: Any, width: int) -> str:
        text = "-" if value is None else str(value)
        return text[:width].ljust(width)
    lines = [" ".join(cell(HEADERS.get(name, name), width) for name, width in COLUMNS)]
    notes = []
    for fig in figures:
        row = fig.row()
        lines.append(" ".join(cell(row[name], width) for name, width in COLUMNS))
        shown = ", ".join(f"{k} {v}" for k, v in sorted(fig.outcomes.items()))
        notes.append(f"  {fig.scenario}: {shown}" + (f"; {fig.note}" if fig.note else ""))
    return "\n".join([*lines, "outcomes:", *notes])
