"""Fixed 10-second windows of media time and the counts the analyzers need per window.

Window ``i`` covers ``[i * length, (i + 1) * length)`` seconds since the stream's
first PTS. A window is closed (and emitted) once the stream's media time has moved
past its end; windows crossed by a gap are emitted too, with zero counts, so that
downstream never waits for a window that will not come.
"""

from __future__ import annotations

from .items import WindowRecord


class WindowAccumulator:
    """Collects per-window counts and returns the windows that are finished.

    A window closes ``settle`` seconds after its end, so that when the stream ends a sliver
    past the last boundary (AAC padding makes a 60 s file 60.01 s long) the sliver is folded
    into the window before it instead of becoming a window of its own.
    """

    def __init__(self, length: float = 10.0, settle: float = 0.5) -> None:
        if length <= 0:
            raise ValueError("window length must be positive")
        self.length = length
        self.settle = settle
        self._open: dict[int, WindowRecord] = {}
        self._next_to_emit = 0

    def index_of(self, media_time: float) -> int:
        return max(0, int(media_time // self.length))

    def get(self, media_time: float) -> WindowRecord:
        i = self.index_of(media_time)
        rec = self._open.get(i)
        if rec is None:
            if i < self._next_to_emit:  # late item for a closed window: count it in the oldest open one
                return self.get(self._next_to_emit * self.length)
            rec = self._open[i] = WindowRecord(index=i, start=i * self.length, end=(i + 1) * self.length)
        return rec

    def advance(self, media_time: float) -> list[WindowRecord]:
        """Close every window that ends at or before ``media_time``."""
        done: list[WindowRecord] = []
        while (self._next_to_emit + 1) * self.length + self.settle <= media_time:
            done.append(self._pop(self._next_to_emit))
        return done

    def finish(self, media_time: float) -> list[WindowRecord]:
        """Close all windows at the end of the stream; the last one is marked incomplete."""
        done = self.advance(media_time)
        last = max(self._open, default=self._next_to_emit - 1)
        sliver = self._open.get(last)
        if sliver is not None and last - 1 in self._open and media_time - sliver.start < self.settle:
            self._fold(sliver, self._open[last - 1])
            del self._open[last]
            last -= 1
        while self._next_to_emit <= last:
            done.append(self._pop(self._next_to_emit))
        if done and done[-1].end > media_time:
            done[-1].complete = False
        return done

    @staticmethod
    def _fold(sliver: WindowRecord, into: WindowRecord) -> None:
        for name in ("frames_decoded", "video_packets", "corrupt_frames", "frozen_frames", "decode_errors", "gaps", "missing_frames"):
            setattr(into, name, getattr(into, name) + getattr(sliver, name))
        into.gap_seconds += sliver.gap_seconds
        into.audio_seconds += sliver.audio_seconds
        into.end = sliver.start

    def _pop(self, i: int) -> WindowRecord:
        rec = self._open.pop(i, None) or WindowRecord(index=i, start=i * self.length, end=(i + 1) * self.length)
        self._next_to_emit = i + 1
        return rec
