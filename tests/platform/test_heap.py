"""Giving freed heap back (streamsight.heap): when a stage trims, and that a trim gives memory back."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from streamsight import heap

from ..conftest import FakeClock as Clock


def test_a_trim_is_due_when_a_stream_ended_or_the_period_passed():
    clock = Clock()
    trimmer = heap.Trimmer(every_s=10.0, clock=clock)
    assert not trimmer.after_work(ended=False), "nothing ended, no time passed"
    assert trimmer.after_work(ended=True)
    clock.now = 9.0
    assert not trimmer.after_work(ended=False)
    clock.now = 10.5
    assert trimmer.after_work(ended=False), "the period passed since the last trim"
    assert not trimmer.due(ended=False)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not ctypes.util.find_library("c"), reason="no C library to trim (not glibc)")
def test_keeping_large_blocks_then_trimming_gives_the_memory_back():
    if not heap.keep_large_blocks():
        pytest.skip("this C library has no mallopt (not glibc)")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024 * 1024
    try:
        before = _rss_kb()
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)  # touch it: resident
        libc.free(block)
        kept = _rss_kb()
        heap.trim()
        after = _rss_kb()
    finally:  # glibc's defaults again for the rest of this test process
        libc.mallopt(heap.M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(heap.M_TRIM_THRESHOLD, 128 * 1024)
    assert kept - before > 48 * 1024, "a freed large block is kept for reuse until a trim"
    assert kept - after > 48 * 1024, "the trim gave it back"
