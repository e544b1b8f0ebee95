"""The suite's own ground truth: how overlap is counted from the recorders' records.

A killed attempt records no end, so it is taken to have lived a tick past its last record, unless the next
attempt's recorder found none of its processes left when it started (it looks in /proc).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import recorder
from tests.faults.truth import Execution, overlap_seconds
from tests.support.waiting import wait_until


def test_an_attempt_found_gone_at_the_next_start_does_not_overlap_it() -> None:
    killed = Execution("t", "a1", "h", start=0.0, last=1.0)  # no end record: killed
    retry = Execution("t", "a2", "h", start=1.1, last=2.0, ended=True)
    assert overlap_seconds([killed, retry]) == pytest.approx(recorder.TICK - 0.1)  # within its last tick
    retry.found_dead.add("a1")
    assert overlap_seconds([killed, retry]) == 0.0
    beside = Execution("t", "a3", "h", start=0.5, last=1.5, ended=True)  # truly ran at the same time
    assert overlap_seconds([killed, beside]) == pytest.approx(0.5 + recorder.TICK)


def test_the_recorder_says_which_earlier_attempts_have_no_process_left(tmp_path: Path) -> None:
    """A real recorder process for attempt a1: while it runs a1 is not gone; once it is killed (and even while
    it is a zombie, not yet waited for) it is."""
    env = {**os.environ, "AIDD_TASK_ID": "t", "AIDD_ATTEMPT_ID": "a1"}
    proc = subprocess.Popen([sys.executable, "-S", "-I", recorder.__file__, str(tmp_path), "30"], env=env)
    try:
        wait_until(lambda: (tmp_path / "a1.jsonl").exists(), 10, "a1's start record")
        ident = {"task": "t", "attempt": "a2", "host": "h"}
        assert recorder._dead_siblings(str(tmp_path), ident) == []
        os.kill(proc.pid, signal.SIGKILL)
        wait_until(lambda: recorder._dead_siblings(str(tmp_path), ident) == ["a1"], 10, "a1 found gone")
    finally:
        proc.kill()
        proc.wait(10)
    start = json.loads((tmp_path / "a1.jsonl").read_text().splitlines()[0])
    assert (start["event"], start["dead"]) == ("start", [])
