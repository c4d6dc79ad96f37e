"""The typed items an ingest pipeline yields, in media time (seconds since the stream's first PTS).

A consumer switches on the item class:

* :class:`SampledFrame`  -- a frame converted for one consumer (``flow``, ``cnn``, ``glitch``);
* :class:`FrameSignals`  -- decoder signals for every decoded frame, batched (about one batch a second);
* :class:`AudioChunk`    -- mono float32 PCM at the configured rate;
* :class:`WindowRecord`  -- one per 10 s window once the stream has moved past it;
* :class:`StatusEvent`   -- started / reconnecting / reconnected / gap / ended / failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union

import numpy as np

from .errors import ErrorCode


@dataclass(slots=True)
class SampledFrame:
    """One decoded frame converted for ``consumer``.

    ``image`` is ``(H, W)`` uint8 for gray, ``(H, W, 3)`` uint8 for RGB. ``index`` is the
    decoded frame's running number in the stream (0-based), the same as in :class:`FrameSignal`.
    ``yuv420p`` is set when ``image`` holds yuv420p planes instead of RGB (a consumer with
    ``pass_yuv420p``, see services.ingest.sampling): ``(H * 3 / 2, W)``, Y rows then U then V;
    its value is the (colorspace, color_range) FFmpeg tags their conversion to RGB needs.
    """

    consumer: str
    index: int
    media_time: float
    window: int
    image: np.ndarray
    source_width: int
    source_height: int
    yuv420p: tuple[int, int] | None = None


@dataclass(slots=True)
class FrameSignal:
    """Decoder signals for one decoded frame (every frame, sampled or not).

    ``gap_before`` is the media time missing before this frame in seconds (0 when the
    frame follows its predecessor by one frame duration); ``missing_frames`` is the same
    gap counted in frames. ``diff`` is the mean absolute luma difference to the previous
    frame on a tiny grid (0-255 scale); ``frozen`` is ``diff`` under the freeze threshold.
    """

    index: int
    media_time: float
    is_corrupt: bool
    key_frame: bool
    gap_before: float
    missing_frames: int
    frozen: bool
    diff: float


@dataclass(slots=True)
class FrameSignals:
    """A batch of per-frame signals plus decode errors counted since the previous batch."""

    signals: list[FrameSignal]
    decode_errors: int


@dataclass(slots=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] starting at ``media_time``.

    ``source_start`` is the source's own timestamp of the first sample (``media_time`` follows
    it only within the resync tolerance); ``source_layout`` and ``source_rate`` the source's
    channel layout and sample rate there ("" and 0 when unknown); ``demux_lead_max`` how far
    ahead of the audio the source's demuxer may hand out video (0: no known bound).
    """

    media_time: float
    sample_rate: int
    samples: np.ndarray
    source_start: float = 0.0
    source_layout: str = ""
    source_rate: int = 0
    demux_lead_max: float = 0.0

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(slots=True)
class WindowRecord:
    """Counts for window ``index`` covering media time ``[start, end)``.

    ``complete`` is False for the last, partial window of a stream. ``gaps`` counts PTS
    gaps that started in the window (video or a reconnect), ``gap_seconds`` their total length.
    ``source_formats``: the source's formats in the window (set when the window is closed).
    """

    index: int
    start: float
    end: float
    frames_decoded: int = 0
    video_packets: int = 0
    corrupt_frames: int = 0
    frozen_frames: int = 0
    decode_errors: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0
    missing_frames: int = 0
    audio_seconds: float = 0.0
    complete: bool = True
    source_formats: list = field(default_factory=list)  # sourceformat.SourceFormat, in time order


class StatusKind(str, Enum):
    """Lifecycle of one stream, as published on the stream status subject."""

    STARTED = "started"
    RECONNECTING = "reconnecting"
    RECONNECTED = "reconnected"
    GAP = "gap"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(slots=True)
class StatusEvent:
    """A lifecycle event; ``code`` is set for FAILED (and for a truncated file at ENDED)."""

    kind: StatusKind
    media_time: float
    message: str = ""
    code: ErrorCode | None = None
    details: dict[str, Any] = field(default_factory=dict)


Item = Union[SampledFrame, FrameSignals, AudioChunk, WindowRecord, StatusEvent]
