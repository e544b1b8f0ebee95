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
            _record(path, ident, "parent", "start")
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        return _work(path, ident, "child", seconds, "loud" in flags)
    return _work(path, ident, "main", seconds, "loud" in flags)


def _work(path: str, ident: dict[str, str], role: str, seconds: float, loud: bool) -> int:
    deadline = time.time() + seconds
    _record(path, ident, role, "start")
    while (left := deadline - time.time()) > 0:
        time.sleep(min(TICK, left))
        _record(path, ident, role, "alive")
        if loud:
            print(f"{role} alive at {time.time():.2f}", flush=True)
    _record(path, ident, role, "end")
    return 0


def _record(path: str, ident: dict[str, str], role: str, event: str) -> None:
    line = json.dumps({**ident, "role": role, "pid": os.getpid(), "event": event, "t": time.time()})
    with open(path, "a") as out:
        out.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
