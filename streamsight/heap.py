"""Keep a model-running process's heap flat over many streams (glibc malloc; no-ops elsewhere).

Work runs in threads (ingest's decoders, a stage's worker thread, onnxruntime's pools), and
glibc gives threads their own malloc arenas (up to 8 per core), each keeping what it once held
after the memory is freed. Over many streams RSS then climbs to the sum of the arenas'
high-water marks, not what a service holds: ingest was 11 MB higher after 10-20 short
streams in the soak test. `trim()`, called when a stream has ended, returns the free pages of
every arena.

`keep_large_blocks()` is for processes that run models (streamsight.inference calls it):
their buffers come from malloc (onnxruntime's own arena is off, see there), and glibc would
mmap each block over its threshold (32 MiB at most) afresh on every inference and unmap it
after, page-faulting it in again each time: glitch's classifier took 20 ms of CPU per 640x360
frame that way instead of 14. With large blocks served from the heap and no automatic trim,
the blocks are reused between inferences, and `trim()` gives them back: a `Trimmer` calls it
when a stream has ended and every `every_s` seconds while work goes on, so a long stream's
heap stays bounded too (without any trim, 20 streams' worth of glitch batches took the
classifier from 295 to 723 MB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 1 << 30  # served from the heap up to this size; only trim() gives memory back
TRIM_EVERY_S = 10.0  # a trim costs ~4 ms after 400 MB were freed, ~0.03 ms with nothing to give

_libc = None
try:
    _name = ctypes.util.find_library("c")
    if _name:
        _libc = ctypes.CDLL(_name)
        _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        _libc.malloc_trim.restype = ctypes.c_int
        _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.mallopt.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
    _libc = None


def trim() -> bool:
    """Return free heap pages to the OS; True if anything was released."""
    return bool(_libc.malloc_trim(0)) if _libc is not None else False


def keep_large_blocks() -> bool:
    """Serve large blocks from the heap and keep freed ones for reuse until `trim()`; True if set."""
    if _libc is None:
        return False
    return bool(_libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)) and bool(_libc.mallopt(M_TRIM_THRESHOLD, LARGE_BLOCK))


class Trimmer:
    """When to trim: a stream has ended, or `every_s` has passed since the last trim."""

    def __init__(self, every_s: float = TRIM_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last = clock()

    def due(self, ended: bool) -> bool:
        return ended or self._clock() - self._last >= self.every_s

    def trim(self) -> bool:
        self._last = self._clock()
        return trim()

    def after_work(self, ended: bool) -> bool:
        """Trim if due (call it in the thread that did the work); True if it trimmed."""
        if not self.due(ended):
            return False
        self.trim()
        return True
