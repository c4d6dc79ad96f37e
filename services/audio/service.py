"""Audio service: ingest's audio chunks in, one audio FeatureRecord per (stream, window) out.

One durable consumer, "audio", reads two MEDIA subjects in stored order:

  streamsight.media.v1.audio.<stream>    AudioChunk: mono float32 PCM, ~1 s, with its media time
  streamsight.media.v1.windows.<stream>  WindowRecord i: ingest has moved past window i

Each stream gets its own `AudioAnalyzer` (analyzer.py), made at the stream's first chunk.
Chunks are fed to it; the window record is the clock: record i closes every window <= i
with the audio that came, and each is published once on streamsight.features.v1.audio.<stream>
with message id `<stream>:audio:<i>` (so a redelivery or restart is deduplicated). A window
with no audio gets a record with flag "empty"; one with audio lost on the way or at the source,
"partial" (see `feature_record`).
Streams follow streamsight.lifecycle's one policy: the record with last=True ends the
stream's state, a chunk after the end makes none, and an idle stream's windows are
published flagged "partial" before its state goes.

All number crunching (loudness, spectral features, tagger inference) runs in a worker thread,
so the event loop stays free. Messages are handled one at a time, so a stream's analyzer is
never used by two threads at once. A chunk is acknowledged once the analyzer took it; if the
service dies before the window's record is published, that window comes out "partial" after
the restart (its earlier chunks are gone), never twice.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import numpy as np
import structlog
from nats.aio.msg import Msg

from services.audio.analyzer import AudioAnalyzer, WindowFeatures
from services.audio.settings import AudioSettings
from services.audio.tagger import OnnxTagger, TaggerConfig, TaggerError
from streamsight import subjects
from streamsight.bus import BadMessage
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.inference import model_digest
from streamsight.lifecycle import StreamTable
from streamsight.media import decode, window_record
from streamsight.service import Service

MODALITY = "audio"
WINDOW_S = 10.0
FEATURES_VERSION = "1"  # bump when a feature's meaning changes (FEATURES.md)
PARTIAL_TOLERANCE_S = 0.05  # seconds of audio a window may miss (rounding, encoder priming) before it is "partial"
IDLE_SWEEP_S = 60.0


def open_tagger(settings: AudioSettings) -> OnnxTagger | None:
    """The configured tagger, loaded and warmed up with one window of silence; None when none is set.

    Raises TaggerError, saying what is wrong, when the file does not load or run as a tagger.
    """
    if settings.tagger_path is None:
        return None
    config = TaggerConfig(
        path=settings.tagger_path,
        kind=settings.tagger_kind,
        classes=tuple(settings.tagger_classes),
        intra_threads=settings.intra_threads or None,
    )
    tagger = OnnxTagger(config)
    if not tagger.classes:
        raise TaggerError(f"{settings.tagger_path}: the model has none of the configured classes {settings.tagger_classes}")
    try:
        tagger.tag(np.zeros(int(WINDOW_S * tagger.sample_rate), np.float32), tagger.sample_rate)
    except Exception as exc:  # onnxruntime's own error types: the graph loads but does not run
        raise TaggerError(f"{settings.tagger_path}: the tagger loads but fails on a test window: {exc}") from exc
    return tagger


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


def feature_record(
    stream_id: str,
    window: int,
    clock: media_pb2.WindowRecord | None,
    features: WindowFeatures | None,
    info: dict[str, str],
    producer: str,
) -> features_pb2.FeatureRecord:
    """The FeatureRecord of one window: the analyzer's features, or an "empty" record without them.

    `clock` is ingest's record of the window (None when it never came); its span is the
    record's span. "partial": less audio arrived than ingest decoded in the window (lost on
    the way), or the source itself lost media in it (a gap).
    """
    start, end = (clock.start_s, clock.end_s) if clock is not None else (window * WINDOW_S, (window + 1) * WINDOW_S)
    expected_audio_s = clock.audio_s if clock is not None else WINDOW_S
    flags: list[str] = []
    if features is None:
        values = {"audio_coverage": 0.0}
        flags.append("empty")
    else:
        values = dict(features.features)
        info = {**info, **features.metadata}
        received_s = values["audio_coverage"] * WINDOW_S
        if received_s < expected_audio_s - PARTIAL_TOLERANCE_S or (clock is not None and clock.gap_s > PARTIAL_TOLERANCE_S):
            flags.append("partial")
    return features_pb2.FeatureRecord(
        stream_id=stream_id,
        window=window,
        modality=common_pb2.MODALITY_AUDIO,
        start_s=start,
        end_s=end,
        values=values,
        info=info,
        flags=flags,
        producer_version=producer,
    )


@dataclass
class StreamState:
    """What the service holds for one stream between its messages."""

    next_window: int  # first window not yet published
    analyzer: AudioAnalyzer | None = None  # made at the first chunk, at its sample rate
    done: dict[int, WindowFeatures] = field(default_factory=dict)  # closed, waiting for their window record


class AudioService(Service):
    name = "audio"
    Settings = AudioSettings
    settings: AudioSettings

    async def start(self) -> None:
        s = self.settings
        self.tagger = await asyncio.to_thread(open_tagger, s)
        if self.tagger is None:
            self.log.warning("no tagger configured (STREAMSIGHT_AUDIO_TAGGER_PATH); loudness and spectral features only", tagger="none")
            self.producer = f"audio features-v{FEATURES_VERSION} tagger-none"
        else:
            digest = await asyncio.to_thread(model_digest, s.tagger_path)
            self.producer = f"audio features-v{FEATURES_VERSION} tagger-{self.tagger.name}@sha256:{digest}"
        self.info = {"tagger": self.tagger.name if self.tagger else "none", "provider": self.tagger.provider if self.tagger else "cpu"}
        self.streams: StreamTable[StreamState] = StreamTable(self.name, idle_s=s.stream_idle_s)
        self._last_sweep = time.monotonic()
        assert self.bus is not None
        self.bus.consume(
            self.name,
            [subjects.media("audio"), subjects.media("windows")],
            self.on_message,
            subjects.MEDIA_STREAM,
            batch=32,
            inactive_threshold_s=300,
        )

    def health_info(self) -> dict[str, str]:
        info = {"tagger": self.info["tagger"], "provider": self.info["provider"], "producer": self.producer}
        if self.tagger is not None:
            info["tagger_kind"] = self.settings.tagger_kind
            info["tagger_classes"] = str(len(self.tagger.classes))
            if self.tagger.missing_classes:
                info["tagger_missing_classes"] = ", ".join(self.tagger.missing_classes)
        return info

    async def stop(self) -> None:
        if len(self.streams):  # their open windows come again from MEDIA's unacknowledged messages, or as "partial"
            self.log.info("stopping with streams open", streams=sorted(self.streams))

    # ------------------------------------------------------------ messages

    async def on_message(self, msg: Msg) -> None:
        kind = msg.subject.split(".")[3]
        sid = subjects.stream_of(msg.subject)
        with structlog.contextvars.bound_contextvars(stream_id=sid):
            if kind == "audio":
                await self._on_chunk(sid, msg.data)
            elif kind == "windows":
                await self._on_window(sid, msg.data)
            else:
                raise BadMessage(f"the audio service does not read {kind!r} messages")
        await self._sweep_idle()

    async def _on_chunk(self, sid: str, data: bytes) -> None:
        rate, start, samples = decode_chunk(sid, data)
        state = self._state(sid, int(start // WINDOW_S), from_start=start < 1.0)
        if state is None:
            return  # a late or redelivered chunk of a finished stream (counted)
        if state.analyzer is None:
            state.analyzer = AudioAnalyzer(sample_rate=rate, window_s=WINDOW_S, tagger=self.tagger, silence_dbfs=self.settings.silence_dbfs)
        elif rate != state.analyzer.sample_rate:
            raise BadMessage(f"audio chunk at {rate} Hz in a stream that started at {state.analyzer.sample_rate} Hz")
        if samples.size == 0:
            return
        closed = await asyncio.to_thread(state.analyzer.push, samples, start)
        for record in closed:
            state.done[record.window] = record

    async def _on_window(self, sid: str, data: bytes) -> None:
        record = window_record(data, sid)
        state = self._state(sid, record.index, from_start=record.index == 0)
        if state is None:
            return
        if record.index >= state.next_window:
            if state.analyzer is not None:
                for closed in await asyncio.to_thread(state.analyzer.close_through, record.index):
                    state.done[closed.window] = closed
            for w in range(state.next_window, record.index + 1):
                await self._publish(sid, w, record if w == record.index else None, state.done.get(w))
                state.done.pop(w, None)  # only once published: a failed publish is retried with it
                state.next_window = w + 1
        if record.last:
            self._drop(sid, "last window record")

    async def _publish(self, sid: str, window: int, clock: media_pb2.WindowRecord | None, features: WindowFeatures | None,
                       partial: bool = False) -> None:
        assert self.bus is not None
        out = feature_record(sid, window, clock, features, self.info, self.producer)
        if partial and "partial" not in out.flags:
            out.flags.append("partial")
        await self.bus.publish(subjects.features(MODALITY, sid), out, subjects.feature_msg_id(sid, MODALITY, window), kind="features")
        self.log.debug("window published", window=window, flags=list(out.flags))

    # ------------------------------------------------------------ per-stream state

    def _state(self, sid: str, first_window: int, from_start: bool) -> StreamState | None:
        """The stream's state under the lifecycle policy; None for a message after its end."""
        return self.streams.entry(sid, lambda: StreamState(next_window=max(0, first_window)), from_start)

    def _drop(self, sid: str, why: str) -> None:
        state = self.streams.finish(sid)
        if state is None:
            return
        if state.done:
            self.log.warning("audio after the stream's last window dropped", windows=sorted(state.done))
        self.log.info("stream finished", why=why, windows=state.next_window)

    async def _sweep_idle(self) -> None:
        """Streams whose last window record never came (ingest lost): their windows are
        published, flagged partial, and the state goes, so memory stays bounded."""
        now = time.monotonic()
        if now - self._last_sweep < IDLE_SWEEP_S:
            return
        self._last_sweep = now
        for sid, state in self.streams.idle():
            with structlog.contextvars.bound_contextvars(stream_id=sid):
                if state.analyzer is not None:
                    for closed in await asyncio.to_thread(state.analyzer.flush):
                        state.done[closed.window] = closed
                for w in sorted(w for w in state.done if w >= state.next_window):
                    await self._publish(sid, w, None, state.done[w], partial=True)
                self.log.warning("stream idle; flushed without its last window record", windows=sorted(state.done))
