"""Ending background loops: `cancel_and_wait` cancels tasks and waits until each has ended.

`task.cancel()` is a request that Python 3.11 can lose under load: `asyncio.wait_for`, which
nats-py's requests use, returns the awaited result instead of raising CancelledError when the
result and the cancel arrive in the same turn of the event loop. A `while True` loop of NATS
requests (a lease heartbeat, a snapshot loop) then goes on, and whoever awaits it waits for
ever: a stage killed in the test suite under load hung so. Here the cancel is sent again until
the task has ended. Use it for loops with nothing to clean up: a task that must finish work
when cancelled would have that work cancelled too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)

AGAIN_S = 0.2  # how long a cancelled task may take before it is cancelled again


async def cancel_and_wait(tasks: Iterable[asyncio.Task | None]) -> None:
    """Cancel every task and return once all have ended; a task that ended with an error is logged."""
    left = [t for t in tasks if t is not None]
    for task in left:
        task.cancel()
    everything = list(left)
    while left:
        await asyncio.wait(left, timeout=AGAIN_S)
        left = [t for t in left if not t.done()]
        for task in left:
            log.debug("a cancelled task went on; cancelling it again", task=task.get_name())
            task.cancel()
    for task in everything:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task ended with an error", task=task.get_name(), exc_info=task.exception())
