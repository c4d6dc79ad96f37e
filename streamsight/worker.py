"""One worker thread per stage: its heavy steps run there, one at a time, off the event loop.

`asyncio.to_thread` hands each call to whichever thread of the loop's shared pool is free. Each
of those threads grows its own malloc arena and ONNX Runtime scratch space, so what a stage kept
after a job depended on which threads its calls had landed on (vision's RSS after a job stepped
between about 145 and 195 MB from one job to the next). A stage runs its steps one at a time
anyway, so one thread of its own costs nothing and keeps its memory in one place. The caller's
context (the current trace span) goes with each call, as with `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Worker:
    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-work")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, context.run, functools.partial(fn, *args))

    def close(self) -> None:
        """Stop taking work; a call in progress finishes in its thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
