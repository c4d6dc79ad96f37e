"""The audio stage's per-stream logic, without NATS: MEDIA messages in, window results out.

`AudioStreams.step` takes one fetch of `(subject, data)` messages on
streamsight.media.v1.{audio,windows}.<partition>.<stream>, several streams mixed, in stored order:

- an AudioChunk (mono float32 PCM, ~1 s, with its media time) goes to its stream's
  `AudioAnalyzer`, made at the stream's first chunk at that chunk's sample rate;
- ingest's WindowRecord i is the clock: it closes every window <= i with the audio that
  came, and each comes out once as a `WindowResult` (see `window_result` for its flags).

Streams follow streamsight.lifecycle's policy: the record with last=True ends the stream's
state, a chunk after the end makes none, an idle stream's windows come out flagged
"partial". A window record past what the stream has shown is rejected (streamsight.windows).
The service (service.py) runs this on the feature-stage runtime; training's offline feature
extraction drives the same class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import structlog

from services.audio.analyzer import AudioAnalyzer, WindowFeatures
from services.audio.tagger import OnnxTagger
from services.audio import iir, loudness, spectral
from streamsight import statecodec, subjects
from streamsight.bus import BadMessage
from streamsight.inference import model_digest
from streamsight.gen.media.v1 import media_pb2
from streamsight.lifecycle import DEFAULT_IDLE_S, StreamTable
from streamsight.media import decode, window_record
from streamsight.stage import StepResult
from streamsight.windows import DEFAULT_WINDOW_S, WindowBounds, WindowResult, span_of

log = structlog.get_logger(__name__)

FEATURES_VERSION = "1"  # bump when a feature's meaning changes (FEATURES.md)
PARTIAL_TOLERANCE_S = 0.05  # seconds of audio a window may miss (rounding, encoder priming) before it is "partial"


def producer_version(tagger: OnnxTagger | None) -> str:
    """producer_version of every audio FeatureRecord (the service and training's extractor):
    the feature definitions and the exact tagger model, if any (reads the model file)."""
    if tagger is None:
        return f"audio features-v{FEATURES_VERSION} tagger-none"
    return f"audio features-v{FEATURES_VERSION} tagger-{tagger.name}@sha256:{model_digest(tagger.config.path)}"


def record_info(tagger: OnnxTagger | None) -> dict[str, str]:
    """`info` of every audio FeatureRecord: the tagger and where it runs."""
    return {"tagger": tagger.name if tagger else "none", "provider": tagger.provider if tagger else "cpu"}


def decode_chunk(stream_id: str, data: bytes) -> tuple[int, float, np.ndarray]:
    """(sample rate, start s, samples) of an AudioChunk message; BadMessage for anything unusable."""
    chunk = decode(media_pb2.AudioChunk, data, stream_id)
    if not 4000 <= chunk.sample_rate <= 384000:
        raise BadMessage(f"audio chunk sample rate {chunk.sample_rate} Hz is outside 4000-384000")
    if len(chunk.pcm_f32le) % 4:
        raise BadMessage(f"audio chunk has {len(chunk.pcm_f32le)} PCM bytes, not a whole number of float32 samples")
    if not math.isfinite(chunk.start_s):
        raise BadMessage(f"audio chunk start {chunk.start_s} is not a finite media time")
    samples = np.frombuffer(chunk.pcm_f32le, dtype="<f4")
    if not np.all(np.isfinite(samples)):
        raise BadMessage("audio chunk contains NaN or infinite samples")
    start = chunk.start_s
    if start < 0:  # encoder priming before the stream's zero: drop the samples before 0 s
        skip = min(samples.size, int(round(-start * chunk.sample_rate)))
        samples, start = samples[skip:], 0.0
    return chunk.sample_rate, start, samples


def window_result(
    stream_id: str,
    window: int,
    clock: media_pb2.WindowRecord | None,
    features: WindowFeatures | None,
    window_s: float = DEFAULT_WINDOW_S,
    partial: bool = False,
) -> WindowResult:
    """One window's result: the analyzer's features, or an "empty" result without them.

    `clock` is ingest's record of the window (None when it never came); its span is the
    result's span. "partial": less audio arrived than ingest decoded in the window (lost on
    the way), the source itself lost media in it (a gap), or `partial` says so (an idle flush).
    """
    start, end = (clock.start_s, clock.end_s) if clock is not None else span_of(window, window_s)
    expected_audio_s = clock.audio_s if clock is not None else window_s
    flags: list[str] = []
    info: dict[str, str] = {}
    if features is None:
        values = {"audio_coverage": 0.0}
        flags.append("empty")
    else:
        values = dict(features.features)
        info = dict(features.metadata)
        received_s = values["audio_coverage"] * window_s
        if received_s < expected_audio_s - PARTIAL_TOLERANCE_S or (clock is not None and clock.gap_s > PARTIAL_TOLERANCE_S):
            flags.append("partial")
    if partial and "partial" not in flags:
        flags.append("partial")
    return WindowResult(stream_id, window, start, end, values, tuple(flags), info)


@dataclass
class StreamState:
    """What the stage holds for one stream between its messages."""

    next_window: int  # first window not yet emitted
    bounds: WindowBounds
    analyzer: AudioAnalyzer | None = None  # made at the first chunk, at its sample rate
    done: dict[int, WindowFeatures] = field(default_factory=dict)  # closed, waiting for their window record


class AudioStreams:
    """Per-stream analyzers of one audio instance, stepped once per fetch."""

    def __init__(self, tagger: OnnxTagger | None = None, silence_dbfs: float = -60.0, window_s: float = DEFAULT_WINDOW_S,
                 idle_s: float = DEFAULT_IDLE_S) -> None:
        self.tagger = tagger
        self.silence_dbfs = silence_dbfs
        self.window_s = window_s
        self.streams: StreamTable[StreamState] = StreamTable("audio", idle_s=idle_s)

    def step(self, messages: list[tuple[str, bytes]]) -> StepResult:
        """Handle one fetch in order; bad messages are returned in `rejected` by position."""
        windows: list[WindowResult] = []
        rejected: dict[int, str] = {}
        for position, (subject, data) in enumerate(messages):
            kind, sid = subject.split(".")[3], subjects.stream_of(subject)
            try:
                if kind == "audio":
                    self._on_chunk(sid, data)
                elif kind == "windows":
                    windows += self._on_window(sid, data)
                else:
                    raise BadMessage(f"the audio service does not read {kind!r} messages")
            except BadMessage as exc:
                rejected[position] = str(exc)
        return StepResult(windows, rejected)

    def _state(self, sid: str, first_window: int, from_start: bool) -> StreamState | None:
        """The stream's state under the lifecycle policy; None for a message after its end."""
        make = lambda: StreamState(next_window=max(0, first_window), bounds=WindowBounds(self.window_s))  # noqa: E731
        return self.streams.entry(sid, make, from_start)

    def _on_chunk(self, sid: str, data: bytes) -> None:
        rate, start, samples = decode_chunk(sid, data)
        state = self._state(sid, int(start // self.window_s), from_start=start < 1.0)
        if state is None:
            return  # a late or redelivered chunk of a finished stream (counted)
        if state.analyzer is None:
            state.analyzer = AudioAnalyzer(sample_rate=rate, window_s=self.window_s, tagger=self.tagger, silence_dbfs=self.silence_dbfs)
        elif rate != state.analyzer.sample_rate:
            raise BadMessage(f"audio chunk at {rate} Hz in a stream that started at {state.analyzer.sample_rate} Hz")
        if samples.size == 0:
            return
        state.bounds.saw_media(start + samples.size / rate)
        for closed in state.analyzer.push(samples, start):
            state.done[closed.window] = closed

    def _on_window(self, sid: str, data: bytes) -> list[WindowResult]:
        record = window_record(data, sid)
        if sid not in self.streams:
            WindowBounds(self.window_s).check(record)  # a first message far into the stream is forged
        state = self._state(sid, record.index, from_start=record.index == 0)
        if state is None:
            return []
        state.bounds.check(record)
        out: list[WindowResult] = []
        if record.index >= state.next_window:
            if state.analyzer is not None:
                for closed in state.analyzer.close_through(record.index):
                    state.done[closed.window] = closed
            for w in range(state.next_window, record.index + 1):
                out.append(window_result(sid, w, record if w == record.index else None, state.done.pop(w, None), self.window_s))
            state.next_window = record.index + 1
        if record.last:
            self._end(sid)
        return out

    def _end(self, sid: str) -> None:
        state = self.streams.finish(sid)
        if state is not None and state.done:
            log.warning("audio after the stream's last window dropped", stream_id=sid, windows=sorted(state.done))

    def export_state(self, stream_id: str) -> bytes:
        """The stream's whole state as bytes (streamsight.statecodec: no pickle); KeyError if none."""
        state = self.streams.get(stream_id)
        if state is None:
            raise KeyError(stream_id)
        a = state.analyzer
        if a is None or a._window is None:
            return statecodec.dumps(state, _STATE_CLASSES, {"tagger": self.tagger})
        # The window buffer past the last sample is zeros: saved without them (a 10 s window at
        # 32 kHz is 1.28 MB of float32 when full), padded again on import.
        full = a._buf
        a._buf = full[: max(0, min(full.size, a._next - a._window * a.window_len))]
        try:
            return statecodec.dumps(state, _STATE_CLASSES, {"tagger": self.tagger})
        finally:
            a._buf = full

    def import_state(self, stream_id: str, data: bytes) -> None:
        """Hold the stream as `export_state` left it (another replica's, its partition moved here)."""
        state = statecodec.loads(data, _STATE_CLASSES, {"tagger": self.tagger})
        if not isinstance(state, StreamState):
            raise statecodec.StateError(f"the saved state is not audio's state of {stream_id!r}")
        a = state.analyzer
        if a is not None and a._buf.size < a.window_len:
            a._buf = np.concatenate([a._buf, np.zeros(a.window_len - a._buf.size, np.float32)])
        self.streams.entry(stream_id, lambda: state, from_start=False)

    def evict_idle(self, now: float | None = None) -> list[WindowResult]:
        """Streams whose last window record never came (ingest lost): their windows come out
        flagged partial, and the state goes, so memory stays bounded."""
        out: list[WindowResult] = []
        for sid, state in self.streams.idle(now):
            if state.analyzer is not None:
                for closed in state.analyzer.flush():
                    state.done[closed.window] = closed
            for w in sorted(w for w in state.done if w >= state.next_window):
                out.append(window_result(sid, w, None, state.done[w], self.window_s, partial=True))
            log.warning("audio stream idle; flushed without its last window record", stream_id=sid, windows=len(out))
        return out


# What a stream's saved state may hold (export_state / import_state).
_STATE_CLASSES = (StreamState, WindowBounds, AudioAnalyzer, WindowFeatures, loudness.KWeighting, iir.BlockIIR,
                  spectral.SpectralAnalyzer)
