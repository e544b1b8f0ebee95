"""Waiting for a condition: poll until it holds, with a deadline that fails the test and says what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar, cast

T = TypeVar("T")


class Deadline:
    """The end of one wait; `check` fails the test once it has passed."""

    def __init__(self, timeout: float, what: object) -> None:
        self.timeout, self.what = timeout, what
        self.end = time.monotonic() + timeout

    def check(self) -> None:
        """AssertionError naming what was awaited, once the deadline has passed."""
        if time.monotonic() > self.end:
            raise AssertionError(f"timed out after {self.timeout:g}s waiting for {self.what}")


def wait_until(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "", interval: float = 0.05) -> T:
    """Call `probe` until it returns something truthy (returned); AssertionError after `timeout` seconds."""
    deadline = Deadline(timeout, what or probe)
    while not (value := probe()):
        deadline.check()
        time.sleep(interval)
    return value


async def await_until(probe: Callable[[], Coroutine[object, object, T | None] | T | None], timeout: float = 15.0,
                      what: str = "", interval: float = 0.05,
                      pause: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """`wait_until` in an event loop: `probe` may be a coroutine function; between tries the loop runs `pause`
    (a console test passes `pilot.pause`, so the app handles its messages meanwhile)."""
    deadline = Deadline(timeout, what or probe)
    while True:
        answer = probe()
        # A coroutine is awaited; any other awaitable is an answer (a Textual widget is awaitable).
        value = await answer if inspect.iscoroutine(answer) else answer
        if value:
            return cast(T, value)
        deadline.check()
        await pause(interval)
