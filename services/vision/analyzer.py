"""Per-stream vision analysis: frames in, one feature dict per finished 10-second window out.

A `StreamAnalyzer` keeps one stream's state (previous frames, open windows, clocks). It
never runs a model by itself: frames are queued with `submit_flow_frame` /
`submit_cnn_frame`, and `process_streams` runs the models for the queued work of many
streams at once (batched across streams), then hands every analyzer its results and
collects the windows that finished. `add_flow_frame`, `add_cnn_frame` and `flush` are the
one-stream shortcuts.

Windows: window i covers media time [10 i, 10 i + 10). A flow pair belongs to the window of
its later frame. Window i is finished when both frame kinds have reached its end, or when
either has gone `close_grace_s` past it (so a stream without CNN frames still produces
windows). Windows with no frames inside a gap are emitted too, with zero counts.
A caller with a better clock (the vision service follows ingest's window records) sets
`close_on_media_clock=False` and finishes windows itself with `finish_until(i)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from services.vision.features import (
    CUT_THRESHOLD,
    WindowAccumulator,
    cosine_distance,
    flow_pair_stats,
    gray_histogram,
    histogram_distance,
)
from services.vision.runtime import CNN_INPUT_SIZE, VisionModels

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AnalyzerConfig:
    """Timing rules; the defaults match ingest's defaults (flow at 5 fps, CNN at 1 fps)."""

    window_s: float = 10.0
    flow_fps: float = 5.0
    max_pair_gap_intervals: float = 3.0  # frames further apart are not compared (a stall or a seek)
    max_novelty_gap_s: float = 3.0  # CNN frames further apart give no novelty value
    close_grace_s: float = 2.0
    close_on_media_clock: bool = True  # False: windows finish only through finish_until()/flush()

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.flow_fps <= 0 or self.close_grace_s < 0:
            raise ValueError(f"invalid analyzer config: {self}")


@dataclass(frozen=True)
class WindowFeatures:
    """One finished window of one stream."""

    window: int
    start_s: float
    end_s: float
    features: dict[str, float]


@dataclass
class _FlowItem:
    pts: float
    brightness: float
    brightness_delta: float | None
    cut: bool
    pair: tuple[np.ndarray, np.ndarray] | None
    time_scale: float
    flow: np.ndarray | None = None
    prob: float = 0.0


@dataclass
class _CnnItem:
    pts: float
    rgb: np.ndarray
    embedding: np.ndarray | None = None


@dataclass
class _Clock:
    flow: float = -math.inf
    cnn: float = -math.inf


def _check_pts(pts: float) -> float:
    try:
        value = float(pts)
    except (TypeError, ValueError):
        raise TypeError(f"pts must be a number of seconds, got {pts!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"pts must be a finite, non-negative number of seconds, got {pts!r}")
    return value


def _check_gray(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise ValueError(f"flow frame must be a gray uint8 array [H,W], got {arr.dtype} {arr.shape}")
    if min(arr.shape) < 16:
        raise ValueError(f"flow frame {arr.shape[1]}x{arr.shape[0]} is too small (min 16x16)")
    return arr


def _check_rgb(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.shape != (CNN_INPUT_SIZE, CNN_INPUT_SIZE, 3):
        raise ValueError(f"CNN frame must be uint8 RGB [{CNN_INPUT_SIZE},{CNN_INPUT_SIZE},3], got {arr.dtype} {arr.shape}")
    return arr


@dataclass(eq=False)
class StreamAnalyzer:
    """One stream's vision state. Not thread-safe: feed it from one task at a time."""

    models: VisionModels | None = None
    config: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    stream_id: str = ""
    dropped_frames: int = 0  # out of order, duplicate or for an already finished window
    first_window: int | None = None  # the first window to emit; None: the first frame's window

    def __post_init__(self) -> None:
        if self.first_window is not None and self.first_window < 0:
            raise ValueError(f"first_window must be >= 0, got {self.first_window}")
        self._queue: list[_FlowItem | _CnnItem] = []
        self._windows: dict[int, WindowAccumulator] = {}
        self._next_window: int | None = self.first_window
        self._clock = _Clock()
        self._prev_gray: tuple[float, np.ndarray, np.ndarray, float] | None = None  # pts, frame, hist, brightness
        self._prev_embedding: tuple[float, np.ndarray] | None = None
        self._last_queued = _Clock()

    # ---- input -------------------------------------------------------------------------

    def _accept(self, pts: float, last: float) -> bool:
        window = int(pts // self.config.window_s)
        if pts <= last or (self._next_window is not None and window < self._next_window):
            self.dropped_frames += 1
            log.debug("vision frame dropped", stream_id=self.stream_id, pts=pts)
            return False
        if self._next_window is None:
            self._next_window = window
        return True

    def submit_flow_frame(self, gray: np.ndarray, pts: float) -> None:
        """Queue a gray flow frame (uint8 [H,W]) with its media time in seconds."""
        frame, t = _check_gray(gray), _check_pts(pts)
        if not self._accept(t, self._last_queued.flow):
            return
        self._last_queued.flow = t
        hist = gray_histogram(frame)
        brightness = float(frame.mean())
        item = _FlowItem(pts=t, brightness=brightness, brightness_delta=None, cut=False, pair=None, time_scale=1.0)
        if self._prev_gray is not None:
            p_pts, p_frame, p_hist, p_brightness = self._prev_gray
            interval = 1.0 / self.config.flow_fps
            gap = t - p_pts
            if gap <= self.config.max_pair_gap_intervals * interval:
                item.brightness_delta = abs(brightness - p_brightness) * interval / gap
                item.cut = histogram_distance(hist, p_hist) > CUT_THRESHOLD
                if not item.cut and p_frame.shape == frame.shape:  # flow across a cut measures nothing real
                    item.pair = (p_frame, frame)
                    item.time_scale = interval / gap
        self._prev_gray = (t, frame, hist, brightness)
        self._queue.append(item)

    def submit_cnn_frame(self, rgb: np.ndarray, pts: float) -> None:
        """Queue an RGB CNN frame (uint8 [224,224,3]) with its media time in seconds."""
        frame, t = _check_rgb(rgb), _check_pts(pts)
        if not self._accept(t, self._last_queued.cnn):
            return
        self._last_queued.cnn = t
        self._queue.append(_CnnItem(pts=t, rgb=frame))

    def add_flow_frame(self, gray: np.ndarray, pts: float) -> list[WindowFeatures]:
        """Submit and process now; returns windows that finished."""
        self.submit_flow_frame(gray, pts)
        return process_streams([self], self._require_models())[self]

    def add_cnn_frame(self, rgb: np.ndarray, pts: float) -> list[WindowFeatures]:
        """Submit and process now; returns windows that finished."""
        self.submit_cnn_frame(rgb, pts)
        return process_streams([self], self._require_models())[self]

    def flush(self, models: VisionModels | None = None) -> list[WindowFeatures]:
        """End of stream: process what is queued and finish every window up to the last frame."""
        done = process_streams([self], models or self._require_models())[self] if self._queue else []
        last = max(self._clock.flow, self._clock.cnn)
        if self._next_window is not None and last > -math.inf:
            done += self._close_until(int(last // self.config.window_s))
        return done

    def finish_until(self, window: int) -> list[WindowFeatures]:
        """Finish every window up to and including `window` (an external clock, e.g. ingest's
        window records), emitting empty ones for windows without frames. Process queued frames
        first (`process_streams`); a stream that has seen no frame starts at `window`."""
        if self._queue:
            raise RuntimeError("frames are still queued; run process_streams() before finish_until()")
        if self._next_window is None:
            self._next_window = window
        return self._close_until(window)

    @property
    def queued(self) -> int:
        """Frames submitted and not yet processed."""
        return len(self._queue)

    @property
    def next_window(self) -> int | None:
        """The first window not yet emitted (None before the first frame)."""
        return self._next_window

    def discard_queue(self) -> int:
        """Drop the queued, unprocessed frames (after a failed inference); returns how many."""
        n, self._queue = len(self._queue), []
        self.dropped_frames += n
        return n

    def _require_models(self) -> VisionModels:
        if self.models is None:
            raise RuntimeError("this StreamAnalyzer has no models; pass VisionModels or use process_streams()")
        return self.models

    # ---- results -----------------------------------------------------------------------

    def _second(self, pts: float) -> int:
        """Second of its window that `pts` falls in (0 .. ceil(window_s) - 1)."""
        w = self.config.window_s
        return min(int(pts - (pts // w) * w), max(0, math.ceil(w) - 1))

    def _window(self, pts: float) -> WindowAccumulator:
        return self._windows.setdefault(int(pts // self.config.window_s), WindowAccumulator())

    def _apply(self, queue: list[_FlowItem | _CnnItem]) -> list[WindowFeatures]:
        done: list[WindowFeatures] = []
        for item in queue:
            acc = self._window(item.pts)
            if isinstance(item, _FlowItem):
                acc.brightness.append(item.brightness)
                if item.brightness_delta is not None:
                    acc.brightness_deltas.append(item.brightness_delta)
                acc.scene_cuts += int(item.cut)
                if item.flow is not None:
                    acc.add_pair(flow_pair_stats(item.flow, item.time_scale), item.prob, self._second(item.pts))
                self._clock.flow = item.pts
            else:
                acc.cnn_frames += 1
                if item.embedding is not None:
                    prev = self._prev_embedding
                    if prev is not None and item.pts - prev[0] <= self.config.max_novelty_gap_s:
                        acc.novelties.append(cosine_distance(prev[1], item.embedding))
                    self._prev_embedding = (item.pts, item.embedding)
                self._clock.cnn = item.pts
            if self.config.close_on_media_clock:
                done += self._close_ready()
        return done

    def _close_ready(self) -> list[WindowFeatures]:
        w, grace = self.config.window_s, self.config.close_grace_s
        both = min(self._clock.flow, self._clock.cnn)
        either = max(self._clock.flow, self._clock.cnn)
        horizon = max(both, either - grace)
        if horizon == -math.inf:
            return []
        # window i is finished once the horizon reaches its end 10(i+1)
        return self._close_until(int(horizon // w) - 1)

    def _close_until(self, last_window: int) -> list[WindowFeatures]:
        done = []
        assert self._next_window is not None
        while self._next_window <= last_window:
            i = self._next_window
            acc = self._windows.pop(i, WindowAccumulator())
            w = self.config.window_s
            done.append(WindowFeatures(window=i, start_s=i * w, end_s=(i + 1) * w, features=acc.features()))
            self._next_window = i + 1
        return done


def process_streams(analyzers: Sequence[StreamAnalyzer], models: VisionModels) -> dict[StreamAnalyzer, list[WindowFeatures]]:
    """Run the models once over the queued frames of all given streams (batched), then
    advance every stream; returns each analyzer's newly finished windows."""
    queues = {a: a._queue for a in analyzers}
    flow_items = [i for q in queues.values() for i in q if isinstance(i, _FlowItem) and i.pair is not None]
    cnn_items = [i for q in queues.values() for i in q if isinstance(i, _CnnItem)]
    # Results are kept aside until every model has run: when one fails, the queues are left
    # as they were, so the caller can retry stream by stream or discard them.
    flows: list[np.ndarray] = []
    probs = np.zeros(0, np.float32)
    embeddings = np.zeros((0, 0), np.float32)
    if flow_items:
        flows = models.flow_pairs([i.pair for i in flow_items])  # type: ignore[misc]
        probs = models.motion_probability(flows)
    if cnn_items:
        embeddings = models.embed(np.stack([i.rgb for i in cnn_items]))
    for item, flow, prob in zip(flow_items, flows, probs):
        item.flow, item.prob, item.pair = flow, float(prob), None
    for item, emb in zip(cnn_items, embeddings):
        item.embedding = emb
    for a in analyzers:
        a._queue = []
    return {a: a._apply(q) for a, q in queues.items()}
