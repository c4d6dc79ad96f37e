"""The source's format over media time, as the decoder sees it, and per window.

Video (picture size, nominal frame rate, codec) and audio (codec, channel layout, sample
rate) are followed apart, each as a short history of changes, because the decoder reaches a
media time in video and in audio at different moments. `for_window` merges both histories
into the formats of one window: the one in force at its start, then one per change inside it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

KEEP = 64  # changes kept per track: a source flipping formats constantly must not grow this


@dataclass(frozen=True, slots=True)
class VideoFormat:
    width: int
    height: int
    frame_rate: float
    codec: str


@dataclass(frozen=True, slots=True)
class AudioFormat:
    codec: str
    layout: str
    sample_rate: int


@dataclass(frozen=True, slots=True)
class SourceFormat:
    """The source's format from media time ``since`` on (None: no such track seen yet)."""

    since: float
    video: VideoFormat | None = None
    audio: AudioFormat | None = None


class _Track:
    """Changes of one track's format: (time, format), in time order."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.formats: list = []

    def see(self, t: float, fmt) -> None:
        if self.formats and self.formats[-1] == fmt:
            return
        if self.times and t < self.times[-1]:  # a late frame: the change is not before the last one
            t = self.times[-1]
        self.times.append(t)
        self.formats.append(fmt)
        if len(self.times) > KEEP:
            del self.times[0], self.formats[0]

    def at(self, t: float):
        i = bisect_right(self.times, t)
        return self.formats[i - 1] if i else None

    def changes(self, start: float, end: float) -> list[float]:
        return [t for t in self.times if start < t < end]

    def forget_before(self, t: float) -> None:
        """Drop changes older than the one in force at `t`."""
        i = bisect_right(self.times, t) - 1
        if i > 0:
            del self.times[:i], self.formats[:i]


class FormatTracker:
    """What the source's format was when; fed per decoded frame, read per window."""

    def __init__(self) -> None:
        self._video = _Track()
        self._audio = _Track()

    def video(self, t: float, fmt: VideoFormat) -> None:
        self._video.see(t, fmt)

    def audio(self, t: float, fmt: AudioFormat) -> None:
        self._audio.see(t, fmt)

    def for_window(self, start: float, end: float) -> list[SourceFormat]:
        """The formats of window [start, end): the one in force at `start`, then one per change
        inside it. A track not seen yet at `start` counts with its first format (a stream's
        first frames come a little after 0, audio and video apart): its arrival is no change."""
        times = sorted({start, *self._video.changes(start, end), *self._audio.changes(start, end)})
        out: list[SourceFormat] = []
        for t in times:
            video = self._video.at(t) or (self._video.formats[0] if self._video.times and self._video.times[0] < end else None)
            audio = self._audio.at(t) or (self._audio.formats[0] if self._audio.times and self._audio.times[0] < end else None)
            if video is None and audio is None:
                continue
            if out and (out[-1].video, out[-1].audio) == (video, audio):
                continue
            out.append(SourceFormat(t, video, audio))
        return out

    def forget_before(self, t: float) -> None:
        self._video.forget_before(t)
        self._audio.forget_before(t)
