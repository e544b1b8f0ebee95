"""A fault-suite task that keeps its own record: the ground truth of what really ran, and when.

Run as a shell task: `python -S -I recorder.py RECORDS SECONDS [child] [loud]`. It appends one JSON line per
event to `RECORDS/<attempt id>.jsonl` — `start`, `alive` every TICK seconds, `end` — with the task id,
attempt id and host the agent gave it (AIDD_TASK_ID, AIDD_ATTEMPT_ID, FAULT_HOST). The lines are
written by the process doing the work, outside the system under test, so the suite can count
executions and overlapping attempts whatever the coordinator believes. With `child`, a forked
grandchild does the work (and records it) while the task's own process only waits for it, the way
real tools leave helpers behind. With `loud`, each tick also prints a line (log traffic).

Standard library only, no site packages (`-S -I`): it starts in ~15 ms, so hundreds can run at once.
"""

from __future__ import annotations

import json
import os
import sys
import time

TICK = 0.2


def main(argv: list[str]) -> int:
    """Record, work for SECONDS (recording a tick every TICK), record the end; exit 0."""
    records, seconds = argv[1], float(argv[2])
    ident = {"task": os.environ.get("AIDD_TASK_ID", ""), "attempt": os.environ.get("AIDD_ATTEMPT_ID", ""),
             "host": os.environ.get("FAULT_HOST", "")}
    path = os.path.join(records, f"{ident['attempt'] or os.getpid()}.jsonl")
    flags = set(argv[3:])
    if "child" in flags:
        pid = os.fork()
        if pid:
            _note_pid(records, ident)
            _record(path, ident, "parent", "start")
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        return _work(path, ident, "child", seconds, "loud" in flags)
    return _work(path, ident, "main", seconds, "loud" in flags)


def _work(path: str, ident: dict[str, str], role: str, seconds: float, loud: bool) -> int:
    deadline = time.time() + seconds
    records = os.path.dirname(path)
    _note_pid(records, ident)
    _record(path, ident, role, "start", dead=_dead_siblings(records, ident))
    while (left := deadline - time.time()) > 0:
        time.sleep(min(TICK, left))
        _record(path, ident, role, "alive")
        if loud:
            print(f"{role} alive at {time.time():.2f}", flush=True)
    _record(path, ident, role, "end")
    return 0


def _record(path: str, ident: dict[str, str], role: str, event: str, **extra: object) -> None:
    line = json.dumps({**ident, "role": role, "pid": os.getpid(), "event": event, "t": time.time(), **extra})
    with open(path, "a") as out:
        out.write(line + "\n")


def _note_pid(records: str, ident: dict[str, str]) -> None:
    """Add this process to its task's `RECORDS/<task id>.pids` (`attempt pid` lines), before its start record."""
    if ident["task"]:
        with open(os.path.join(records, f"{ident['task']}.pids"), "a") as out:
            out.write(f"{ident['attempt']} {os.getpid()}\n")


def _dead_siblings(records: str, ident: dict[str, str]) -> list[str]:
    """The earlier attempts of this task none of whose processes runs as this one starts.

    A killed attempt records no end, so the suite takes it to have lived a whole tick past its last record;
    a retry that starts within that tick (the agent confirmed the kill, the coordinator was quick) would count
    as an overlap it is not. Looked at here, in /proc (a zombie is dead), the start says which are gone.
    """
    pids: dict[str, list[int]] = {}
    try:
        with open(os.path.join(records, f"{ident['task']}.pids")) as found:
            for line in found:
                attempt, _, pid = line.strip().partition(" ")
                if attempt != ident["attempt"] and pid.isdigit():
                    pids.setdefault(attempt, []).append(int(pid))
    except OSError:
        return []
    return sorted(attempt for attempt, group in pids.items() if not any(_runs(pid) for pid in group))


def _runs(pid: int) -> bool:
    """Whether `pid` is a recorder that has not exited (a reused pid runs something else)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return state not in (b"Z", b"X") and b"recorder.py" in cmdline.read()
    except (OSError, IndexError):
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv))
