"""Cheap per-frame decoder signals: corrupt flag, PTS/frame-count gaps, frozen frames.

Runs on every decoded frame, so it does only bookkeeping and one tiny strided read of
the luma plane (about 32 x 18 samples) for the freeze check; no conversion, no copy of
the picture.
"""

from __future__ import annotations

import av
import numpy as np

from .items import FrameSignal

_GRID_W, _GRID_H = 32, 18


class SignalTracker:
    """Turns the decoded frames of one video stream into :class:`FrameSignal` records.

    ``frame_duration`` is the nominal frame duration in seconds (from the stream's
    average rate); when unknown it is learned from the smallest PTS step seen.
    A frame whose PTS is more than ``gap_factor`` frame durations after its predecessor
    starts a gap; ``freeze_threshold`` is on the 0-255 luma scale.
    """

    def __init__(self, frame_duration: float | None, *, freeze_threshold: float = 0.5, gap_factor: float = 1.5) -> None:
        self.frame_duration = frame_duration if frame_duration and frame_duration > 0 else None
        self.freeze_threshold = freeze_threshold
        self.gap_factor = gap_factor
        self.index = 0
        self._prev_time: float | None = None
        self._prev_grid: np.ndarray | None = None

    def observe(self, frame: av.VideoFrame, media_time: float) -> FrameSignal:
        gap, missing = 0.0, 0
        prev = self._prev_time
        if prev is not None:
            step = media_time - prev
            fd = self.frame_duration
            if fd is None:
                if step > 0:
                    self.frame_duration = step
            elif step > self.gap_factor * fd:
                missing = int(round(step / fd)) - 1
                gap = step - fd
            elif 0 < step < 0.5 * fd:  # the nominal rate was wrong (e.g. variable frame rate)
                self.frame_duration = step
        self._prev_time = media_time

        grid = _luma_grid(frame)
        diff = 255.0
        if grid is not None and self._prev_grid is not None and grid.shape == self._prev_grid.shape:
            diff = float(np.abs(grid - self._prev_grid).mean())
        self._prev_grid = grid

        sig = FrameSignal(
            index=self.index, media_time=media_time, is_corrupt=frame.is_corrupt, key_frame=frame.key_frame,
            gap_before=gap, missing_frames=missing, frozen=diff < self.freeze_threshold, diff=diff,
        )
        self.index += 1
        return sig


def _luma_grid(frame: av.VideoFrame) -> np.ndarray | None:
    """About 32 x 18 luma samples read by stride from plane 0 (int16 for subtraction)."""
    try:
        plane = frame.planes[0]
        h, w, stride = plane.height, plane.width, plane.line_size
        buf = np.frombuffer(plane, np.uint8)
    except (TypeError, ValueError, IndexError):  # hardware or exotic frames: no freeze check
        return None
    sy, sx = max(1, h // _GRID_H), max(1, w // _GRID_W)
    return buf[: h * stride].reshape(h, stride)[sy // 2 : h : sy, sx // 2 : w : sx].astype(np.int16)
