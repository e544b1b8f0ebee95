"""Instructions a no-op plugin task costs the agent's process and its plugin hosts: `bench.warm_pool` under
valgrind's callgrind, which counts instructions instead of timing them.

    .venv/bin/python -m bench.instructions [--tasks 1000,3000] [--hosts 2]

Why: on the shared 2-core VMs a wall-clock or CPU-time figure drifts by ±25 % between minutes, so a cut of a few
per cent on the agent's path cannot be seen in one run (`bench.ab` needs four rounds of ten minutes to see one of
15 %). An instruction count is the same to 0.1 % run after run, whatever else the machine does. It is not time:
system calls, context switches and cache misses are not in it, so a change that moves those (fewer wake-ups)
still needs `bench.ab`; one that trims Python work shows here at once.

Two runs of `bench.warm_pool` (64 in flight, exactly `--hosts` hosts, so that valgrind's slowness does not start
more), with different numbers of tasks; a task's count is the difference of the totals over the difference of
the tasks, so the interpreter's start, the imports and the warm-up cancel out. About a minute on two cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import REPO


def counts(tasks: int, hosts: int, out: Path) -> dict[str, int]:
    """Total instructions of the agent's process and of its hosts in one `bench.warm_pool` run under callgrind."""
    subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}/cg.%p",
                    sys.executable, "-m", "bench.warm_pool", "--tasks", str(tasks), "--repeat", "1",
                    "--hosts", str(hosts)], cwd=REPO, check=True, capture_output=True)
    totals = {"agent": 0, "plugin hosts": 0}
    for path in out.glob("cg.*"):
        text = path.read_text(errors="replace")
        command = re.search(r"^cmd: (.*)$", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if command is None or total is None:
            continue
        part = "plugin hosts" if "nodeagent.plugin_host" in command.group(1) else "agent"
        totals[part] += int(total.group(1))
        path.unlink()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="1000,3000", help="the two runs' numbers of tasks")
    parser.add_argument("--hosts", type=int, default=2, help="plugin hosts (at least 2)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions needs valgrind (Debian's package valgrind)")
    few, many = sorted(int(n) for n in args.tasks.split(","))
    with tempfile.TemporaryDirectory(prefix="aidd-instructions-") as tmp:
        low, high = counts(few, args.hosts, Path(tmp)), counts(many, args.hosts, Path(tmp))
    for part in low:
        print(f"{part:<14} {(high[part] - low[part]) / (many - few):>10,.0f} instructions a task")


if __name__ == "__main__":
    main()
