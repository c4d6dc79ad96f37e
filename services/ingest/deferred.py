"""Work the decode thread leaves to the pipeline's finishing worker, in stream order.

The decode thread only decodes and keeps books; the expensive per-item steps that do not
change any count are deferred: converting a sampled frame (swscale) and writing a packet
to the clip buffer (remux). They travel in the same list as the finished items, so a
single worker that runs them front to back keeps every item in the decode order.
"""

from __future__ import annotations

from typing import Callable, Union

import av

from .clips import ClipBuffer
from .items import Item, SampledFrame
from .sampling import Sampler


class ConvertJob:
    """A sampled frame still to be converted for its consumer."""

    __slots__ = ("sampler", "frame", "index", "media_time", "window")

    def __init__(self, sampler: Sampler, frame: av.VideoFrame, index: int, media_time: float, window: int) -> None:
        self.sampler, self.frame, self.index, self.media_time, self.window = sampler, frame, index, media_time, window

    def run(self) -> SampledFrame:
        frame = self.frame
        image, yuv = self.sampler.sample(frame)
        return SampledFrame(self.sampler.name, self.index, self.media_time, self.window, image, frame.width, frame.height, yuv)


class ClipJob:
    """A packet for the clip buffer, or a call that must follow earlier packets.

    The calls: close the buffer, give it new templates, close an input container whose
    packets (and streams, the buffer's templates) the earlier jobs use.
    """

    __slots__ = ("buffer", "args", "call")

    def __init__(self, buffer: ClipBuffer | None, args: tuple | None = None, call: Callable[[], None] | None = None) -> None:
        self.buffer, self.args, self.call = buffer, args, call

    def run(self) -> None:
        if self.call is not None:
            self.call()
        else:
            self.buffer.write(*self.args)  # type: ignore[misc]


Entry = Union[Item, ConvertJob, ClipJob]


def complete(batch: list[Entry]) -> list[Item]:
    """Run the deferred work of ``batch`` in order and return its items (converted frames in place)."""
    out: list[Item] = []
    for entry in batch:
        kind = type(entry)
        if kind is ConvertJob:
            out.append(entry.run())  # type: ignore[union-attr]
        elif kind is ClipJob:
            entry.run()  # type: ignore[union-attr]
        else:
            out.append(entry)  # type: ignore[arg-type]
    return out
