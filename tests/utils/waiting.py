"""Polling in place of fixed sleeps: wait for a condition, fail clearly when it never holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(predicate: Callable[[], object], timeout_s: float = 10.0,
                interval_s: float = 0.005) -> None:
    """Yield to the event loop until ``predicate()`` is true; AssertionError after
    ``timeout_s`` (a generous bound, never a duration the test relies on)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def until_sync(predicate: Callable[[], object], timeout_s: float = 10.0,
               interval_s: float = 0.01) -> None:
    """``until`` for code off the event loop (threads, subprocesses)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
