"""The stack of `up`, run beside a caller that blocks (tests, benchmarks).

`running_stack` starts the supervisor on an event loop of its own thread, so the services'
and nats-server's output keeps being relayed (a child whose output pipe fills up stops) while
the caller runs jobs with `asyncio.run` or waits on anything else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from streamsight.app.supervisor import Supervisor


@contextmanager
def running_stack(data_dir: Path, out: TextIO, serving_timeout_s: float = 240.0, **options) -> Iterator[Supervisor]:
    """Every built service and nats-server on free ports, serving; stopped on exit."""
    sup = Supervisor(data_dir, free_ports=True, out=out, **options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="supervisor", daemon=True)
    thread.start()

    def call(coro, timeout_s: float):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    try:
        call(sup.start(), 120)
        call(sup.wait_serving(timeout_s=serving_timeout_s), serving_timeout_s + 20)
        yield sup
    finally:
        call(sup.stop(), 120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
