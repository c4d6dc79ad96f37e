"""The vision service's per-stream bookkeeping, without NATS: media messages in, window results out.

`parse_media` turns one MEDIA message (subject + protobuf bytes) into a `FrameIn` or a
`WindowIn`, or raises `BadInput` saying what is wrong. `VisionStreams.step` takes the
parsed messages of one fetch (frames of many streams mixed), runs the models once over all
of them (`process_streams`: one batched inference per fetch) and returns a `WindowResult` for
every window that ingest's window records closed.

Clock: ingest's window record i is the only thing that finishes window i (it arrives after
the window's media); the record with `last=True` flushes the stream and drops its state.
Every window is emitted exactly once while the process lives; flags say how much to trust it:

- "empty": no flow and no CNN frame in the window;
- "partial": some of its input was lost: a frame rejected as bad, a gap in a consumer's
  `sample_index` sequence (messages lost between ingest and us), a failed inference, the
  stream joined mid-way (after a restart, this instance never saw the window's start),
  ingest's record reporting lost media (PTS gaps, missing frames, decode errors), or the
  stream went idle without its last record.

Not thread-safe: one `step` at a time (the service holds a lock and runs it in a thread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import structlog

from services.vision import analyzer as _analyzer
from services.vision.analyzer import AnalyzerConfig, StreamAnalyzer, WindowFeatures, process_streams
from services.vision.features import PairStats, WindowAccumulator
from services.vision.runtime import CNN_INPUT_SIZE, FLOW_MODEL, FRAME_MODEL, MOTION_MODEL, VisionModels
from streamsight import statecodec, subjects
from streamsight.bus import BadMessage
from streamsight.inference import model_digest
from streamsight.gen.media.v1 import media_pb2
from streamsight.lifecycle import DEFAULT_IDLE_S, StreamTable
from streamsight.media import decode, window_record
from streamsight.stage import StepResult
from streamsight.windows import DEFAULT_WINDOW_S, WindowBounds, WindowResult

log = structlog.get_logger(__name__)

# Flow frames are meant to be small (ingest: 320 px wide): ten 1920x1920 ones cost 31 s of CPU
# and 4.7 GB. Larger than the stage's max_flow_side (default 640) is refused as bad input.
MAX_FLOW_SIDE = 640
MIN_FLOW_SIDE = 16

# What every vision FeatureRecord says made it: the service and training's extractor both use these.
PRODUCER_VERSION = "vision-features-1"  # bump when FEATURES.md's definitions change


def model_name(path: Path) -> str:
    """`<file>@sha256:<first 12 hex>`: which exact model made a record."""
    return f"{path.name}@sha256:{model_digest(path)}"


def record_info(provider: str, model_dir: Path) -> dict[str, str]:
    """`info` of every vision FeatureRecord: the inference provider and the three models."""
    model_dir = Path(model_dir)
    return {"provider": provider, "flow_model": model_name(model_dir / FLOW_MODEL),
            "motion_model": model_name(model_dir / MOTION_MODEL), "frame_model": model_name(model_dir / FRAME_MODEL)}


class BadInput(ValueError):
    """A media message that can never be analysed (undecodable, wrong format or size)."""

    def __init__(self, message: str, pts: float | None = None) -> None:
        super().__init__(message)
        self.pts = pts  # media time of the bad frame, when it could be read


@dataclass(frozen=True)
class FrameIn:
    """One sampled frame for the flow ("flow", gray [H,W]) or the frame CNN ("cnn", RGB [224,224,3])."""

    stream_id: str
    kind: str
    pts: float
    sample_index: int
    image: np.ndarray


@dataclass(frozen=True)
class WindowIn:
    """Ingest's window record: window `index` is over for this stream."""

    stream_id: str
    index: int
    start_s: float
    end_s: float
    last: bool
    media_lost: bool  # ingest saw PTS gaps, missing frames or decode errors in the window
    record: media_pb2.WindowRecord  # as ingest sent it, for the stream's window bounds


def _frame(stream_id: str, kind: str, data: bytes, max_flow_side: int = MAX_FLOW_SIDE) -> FrameIn:
    try:
        msg = decode(media_pb2.VideoFrame, data, stream_id)
    except BadMessage as exc:
        raise BadInput(str(exc)) from None
    if not math.isfinite(msg.pts_s) or msg.pts_s < 0:
        raise BadInput(f"frame pts_s must be a finite, non-negative number of seconds, got {msg.pts_s}")
    if msg.sample_index < 0:
        raise BadInput(f"frame sample_index must be >= 0, got {msg.sample_index}")
    w, h, pts = msg.width, msg.height, float(msg.pts_s)
    if kind == "flow":
        if msg.format != media_pb2.PIXEL_FORMAT_GRAY8:
            raise BadInput(f"flow frames must be GRAY8 (format {media_pb2.PIXEL_FORMAT_GRAY8}), got format {msg.format}", pts)
        if not (MIN_FLOW_SIDE <= w <= max_flow_side and MIN_FLOW_SIDE <= h <= max_flow_side):
            raise BadInput(f"flow frame {w}x{h} is outside {MIN_FLOW_SIDE}..{max_flow_side} px per side", pts)
        shape: tuple[int, ...] = (h, w)
    else:
        if msg.format != media_pb2.PIXEL_FORMAT_RGB24:
            raise BadInput(f"CNN frames must be RGB24 (format {media_pb2.PIXEL_FORMAT_RGB24}), got format {msg.format}", pts)
        if (w, h) != (CNN_INPUT_SIZE, CNN_INPUT_SIZE):
            raise BadInput(f"CNN frames must be {CNN_INPUT_SIZE}x{CNN_INPUT_SIZE}, got {w}x{h}", pts)
        shape = (h, w, 3)
    expected = int(np.prod(shape))
    if len(msg.data) != expected:
        raise BadInput(f"{kind} frame {w}x{h} needs {expected} bytes of pixels, got {len(msg.data)}", pts)
    image = np.frombuffer(msg.data, np.uint8).reshape(shape)
    return FrameIn(stream_id, kind, float(msg.pts_s), int(msg.sample_index), image)


def _window(stream_id: str, data: bytes) -> WindowIn:
    try:
        msg = window_record(data, stream_id)
    except BadMessage as exc:
        raise BadInput(str(exc)) from None
    lost = msg.gaps > 0 or msg.missing_frames > 0 or msg.gap_s > 0 or msg.decode_errors > 0 or msg.frames_dropped > 0
    return WindowIn(stream_id, int(msg.index), float(msg.start_s), float(msg.end_s), bool(msg.last), lost, msg)


def parse_media(subject: str, data: bytes, max_flow_side: int = MAX_FLOW_SIDE) -> FrameIn | WindowIn:
    """A MEDIA message on streamsight.media.v1.{frames_flow,frames_cnn,windows}.<partition>.<stream>."""
    parts = subject.split(".")
    if len(parts) != 6 or parts[:3] != [subjects.PREFIX, "media", "v1"]:
        raise BadInput(f"unexpected subject {subject!r}")
    kind, stream_id = parts[3], parts[5]
    if not subjects.is_valid_stream_id(stream_id):
        raise BadInput(f"invalid stream id {stream_id!r}")
    if kind == "frames_flow":
        return _frame(stream_id, "flow", data, max_flow_side)
    if kind == "frames_cnn":
        return _frame(stream_id, "cnn", data)
    if kind == "windows":
        return _window(stream_id, data)
    raise BadInput(f"vision does not take {kind!r} messages")


@dataclass(eq=False)
class _Stream:
    analyzer: StreamAnalyzer
    window_s: float
    bounds: WindowBounds
    partial: set[int] = field(default_factory=set)
    records: dict[int, WindowIn] = field(default_factory=dict)
    next_sample: dict[str, int] = field(default_factory=dict)
    last_pts: dict[str, float] = field(default_factory=dict)

    def window_of(self, pts: float) -> int:
        return int(pts // self.window_s)

    def latest_pts(self) -> float:
        return max(self.last_pts.values(), default=(self.analyzer.next_window or 0) * self.window_s)

    def mark_lost(self, first: int, last: int) -> None:
        self.partial.update(range(first, last + 1))


class VisionStreams:
    """Per-stream analyzers of one vision instance, stepped once per fetched batch."""

    def __init__(self, models: VisionModels, config: AnalyzerConfig | None = None, idle_s: float = DEFAULT_IDLE_S,
                 window_s: float = DEFAULT_WINDOW_S, max_flow_side: int = MAX_FLOW_SIDE) -> None:
        self.max_flow_side = max_flow_side
        # Window records are the clock; the analyzer's own media-clock closing stays off.
        self.config = replace(config or AnalyzerConfig(), close_on_media_clock=False, window_s=window_s)
        self.models = models
        self.idle_s = idle_s
        self.streams: StreamTable[_Stream] = StreamTable("vision", idle_s=idle_s)
        self.late_frames = 0  # frames for a window already finished (dropped): ingest's order broke

    # ---- input ---------------------------------------------------------------------------

    @property
    def late_messages(self) -> int:
        """Messages for a stream that already ended (ignored)."""
        return self.streams.counts.get("late", 0)

    def _state(self, item: FrameIn | WindowIn) -> _Stream | None:
        """The stream's state under streamsight.lifecycle's policy; None for a straggler after its end."""
        sid = item.stream_id
        from_start = (item.sample_index if isinstance(item, FrameIn) else item.index) == 0

        def make() -> _Stream:
            first = 0 if from_start else (self._window_index(item.pts) if isinstance(item, FrameIn) else item.index)
            analyzer = StreamAnalyzer(self.models, self.config, stream_id=sid, first_window=first)
            state = _Stream(analyzer, self.config.window_s, WindowBounds(self.config.window_s))
            if not from_start:  # joined mid-way (a restart): this window's start was seen by someone else
                state.partial.add(first)
                log.info("vision joined a stream mid-way", stream_id=sid, window=first)
            return state

        return self.streams.entry(sid, make, from_start)

    def _window_index(self, pts: float) -> int:
        return int(pts // self.config.window_s)

    def reject(self, stream_id: str, pts: float | None = None) -> None:
        """A message of `stream_id` was bad: the window it belonged to (or the current one) is partial."""
        state = self.streams.get(stream_id)
        if state is None:
            return
        t = pts if pts is not None and math.isfinite(pts) and pts >= 0 else state.latest_pts()
        state.partial.add(state.window_of(t))

    def _submit(self, state: _Stream, frame: FrameIn) -> None:
        done = state.analyzer.next_window
        if done is not None and state.window_of(frame.pts) < done:
            self.late_frames += 1
            if self.late_frames == 1 or self.late_frames % 100 == 0:
                log.warning("frames arrive after their window was finished; dropped", stream_id=frame.stream_id,
                            window=state.window_of(frame.pts), late_frames=self.late_frames)
        expected = state.next_sample.get(frame.kind)
        if frame.sample_index > (expected if expected is not None else 0):
            # Messages lost between ingest and here: every window they could have been in.
            since = state.last_pts.get(frame.kind)
            first = state.window_of(since) if since is not None else (state.analyzer.next_window or 0)
            state.mark_lost(first, state.window_of(frame.pts))
        if expected is None or frame.sample_index >= expected:
            state.next_sample[frame.kind] = frame.sample_index + 1
        if frame.kind == "flow":
            state.analyzer.submit_flow_frame(frame.image, frame.pts)
        else:
            state.analyzer.submit_cnn_frame(frame.image, frame.pts)
        state.last_pts[frame.kind] = max(frame.pts, state.last_pts.get(frame.kind, frame.pts))

    # ---- one fetch -----------------------------------------------------------------------

    def step(self, messages: list[tuple[str, bytes]]) -> StepResult:
        """Analyse one fetch: `messages` are (subject, data) in stored order. Bad ones are
        returned in `rejected` by position; the rest of the batch goes on."""
        rejected: dict[int, str] = {}
        touched: dict[str, _Stream] = {}
        for position, (subject, data) in enumerate(messages):
            try:
                item = parse_media(subject, data, self.max_flow_side)
            except BadInput as exc:
                rejected[position] = str(exc)
                self.reject(subjects.stream_of(subject), exc.pts)
                continue
            if isinstance(item, WindowIn) and item.stream_id not in self.streams:
                try:  # a stream's first message may not be a record far into it (a forged one)
                    WindowBounds(self.config.window_s).check(item.record)
                except BadMessage as exc:
                    rejected[position] = str(exc)
                    continue
            state = self._state(item)
            if state is None:  # a straggler of an ended stream (counted by the table)
                continue
            touched[item.stream_id] = state
            if isinstance(item, WindowIn):
                try:
                    state.bounds.check(item.record)
                except BadMessage as exc:
                    rejected[position] = str(exc)
                    continue
                state.records[item.index] = item
                continue
            state.bounds.saw_media(item.pts)
            try:
                self._submit(state, item)
            except (TypeError, ValueError) as exc:
                rejected[position] = str(exc)
                state.partial.add(state.window_of(item.pts))
        self._infer(list(touched.values()))
        windows: list[WindowResult] = []
        for sid, state in touched.items():
            if not state.records:
                continue
            upto = max(state.records)
            windows += self._finish(state, state.analyzer.finish_until(upto))
            if any(r.last for r in state.records.values() if r.index == upto):
                self._end(sid)
            else:
                state.records = {i: r for i, r in state.records.items() if i > upto}
        return StepResult(windows, rejected)

    def _infer(self, states: list[_Stream]) -> None:
        queued = [s for s in states if s.analyzer.queued]
        if not queued:
            return
        try:
            process_streams([s.analyzer for s in queued], self.models)
            return
        except Exception as exc:  # one stream's input broke the batch: find it, keep the others
            log.warning("batched vision inference failed; retrying stream by stream", error=repr(exc))
        for state in queued:
            try:
                process_streams([state.analyzer], self.models)
            except Exception as exc:
                lost = state.analyzer.discard_queue()
                state.partial.add(state.window_of(state.latest_pts()))
                log.error("vision inference failed; frames dropped", stream_id=state.analyzer.stream_id, frames=lost, error=repr(exc))

    def _finish(self, state: _Stream, done: list[WindowFeatures]) -> list[WindowResult]:
        out = []
        for wf in done:
            record = state.records.get(wf.window)
            f = wf.features
            flags = []
            if f["flow_frames"] == 0 and f["cnn_frames"] == 0:
                flags.append("empty")
            if wf.window in state.partial or record is None or record.media_lost:
                flags.append("partial")
            start, end = (record.start_s, record.end_s) if record is not None else (wf.start_s, wf.end_s)
            out.append(WindowResult(state.analyzer.stream_id, wf.window, start, end, f, tuple(flags)))
        if done:
            state.partial = {w for w in state.partial if w > done[-1].window}
        return out

    def _end(self, stream_id: str) -> None:
        state = self.streams.finish(stream_id)
        if state is not None and state.analyzer.dropped_frames:
            log.info("vision stream ended with dropped frames", stream_id=stream_id, dropped=state.analyzer.dropped_frames)

    # ---- takeover (streamsight.stage) ----------------------------------------------------

    def export_state(self, stream_id: str) -> bytes:
        """The stream's whole state as bytes (streamsight.statecodec: no pickle); KeyError if none."""
        state = self.streams.get(stream_id)
        if state is None:
            raise KeyError(stream_id)
        return statecodec.dumps(state, _STATE_CLASSES, {"models": self.models})

    def import_state(self, stream_id: str, data: bytes) -> None:
        """Hold the stream as `export_state` left it (another replica's, its partition moved here)."""
        state = statecodec.loads(data, _STATE_CLASSES, {"models": self.models})
        if not isinstance(state, _Stream) or state.analyzer.stream_id != stream_id:
            raise statecodec.StateError(f"the saved state is not vision's state of {stream_id!r}")
        self.streams.entry(stream_id, lambda: state, from_start=False)

    def evict_idle(self, now: float | None = None) -> list[WindowResult]:
        """Flush streams that sent nothing for `idle_s` (ingest died before the last record);
        their remaining windows are emitted, flagged partial."""
        out: list[WindowResult] = []
        for sid, state in self.streams.idle(now):
            self._infer([state])
            last = max([state.window_of(state.latest_pts())] + list(state.records))
            state.mark_lost(state.analyzer.next_window or 0, last)
            flushed = self._finish(state, state.analyzer.finish_until(last))
            log.warning("vision stream idle; flushed without its last window record", stream_id=sid, windows=len(flushed))
            out += flushed
        return out


# What a stream's saved state may hold (export_state / import_state).
_STATE_CLASSES = (_Stream, StreamAnalyzer, AnalyzerConfig, WindowAccumulator, PairStats, WindowBounds, WindowIn,
                  _analyzer._Clock, _analyzer._FlowItem, _analyzer._CnnItem)
