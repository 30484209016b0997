"""Event loops on a fake clock (looptime): every sleep, wait_for and timer fast-forwards.

The loop's time moves only when nothing is ready to run, straight to the next timer, so code
that waits with ``asyncio.sleep`` / ``wait_for`` and reads ``loop.time`` (the controller's one
clock) runs its minutes of schedule in milliseconds, and a test that waits on a condition
with a deadline in loop seconds never depends on how busy the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import looptime

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, start: float = 1000.0) -> T:
    """Run ``main`` to completion on a fresh loop whose clock starts at ``start`` and is fake."""
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=start)) as runner:
        return runner.run(main)


async def until(predicate: Callable[[], Awaitable[bool] | bool], *, within: float, what: str,
                step: float = 0.1) -> None:
    """Wait, in loop time, until ``predicate`` holds; fail naming ``what`` after ``within`` loop seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"not {what} within {within:g}s of loop time")
        await asyncio.sleep(step)
