"""Child processes that must not outlive this one (the embedded servers)."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(death_signal: signal.Signals) -> Callable[[], None]:
    """A `preexec_fn` that has the child sent `death_signal` when this process dies, even by `kill -9`.

    Linux sends it when the *thread* that forked exits: start such children from the main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def set_parent_death_signal() -> None:  # runs in the child, after any uid change
        libc.prctl(PR_SET_PDEATHSIG, int(death_signal))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), death_signal)

    return set_parent_death_signal
