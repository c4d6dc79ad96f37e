"""Glitch service: ingest's glitch frames, decoder signals and audio in; glitch and health incidents out.

One durable batch consumer ("glitch") reads frames_glitch, signals, audio and windows of every
stream in stored order. The frames of a batch, from all streams, are classified together in
a thread (onnxruntime, off the event loop); then each message feeds its stream's
`StreamDetector` in order, and the incidents' START/UPDATE/END phases are published as
events_pb2.Glitch CloudEvents with stable ids "<sid>:glitch:<n>:start|update-<k>|end", so a
redelivered batch is deduplicated by JetStream. Streams follow streamsight.lifecycle's one
policy: the last window record ends the open incident and drops the stream's detector, a
late frame after the end makes no new one, and an idle stream's open incident is ended.
A message that does not decode, or a frame whose size does not match its data, is
dead-lettered; other streams are untouched. Freed heap is handed back to the OS when a stream
ends and every few seconds of work (streamsight.heap.Trimmer): the classifier's buffers come
from malloc and would otherwise keep every batch's high-water mark.

Stream health (services/glitch/health: black, freeze, silence, loudness, audio_gap, av_drift,
format_change, no_audio) is judged from the same messages by each stream's `StreamHealth` and
published as events_pb2.HealthIncident CloudEvents (type streamsight.health.v1) with ids
"<sid>:health:<n>:start|update-<k>|end". Freeze is reported there, not as a glitch: a frozen
picture is not corruption, and one incident should not come twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

import numpy as np
from nats.aio.msg import Msg

from services.glitch.classifier import FrameScore, GlitchClassifier
from services.glitch.detector import DetectorConfig, GlitchEvent, Signal, StreamDetector
from services.glitch.health.incidents import HealthEvent
from services.glitch.health.monitor import StreamHealth, feed
from services.glitch.settings import GlitchSettings
from services.glitch.tiles import grid
from streamsight import heap, subjects
from streamsight.bus import BadMessage, until_done
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.lag import MediaLag
from streamsight.lifecycle import StreamTable
from streamsight.windows import WindowBounds
from streamsight.media import decode, window_record
from streamsight.service import Service
from streamsight.worker import Worker

KIND_ENUM = {
    "stripes": events_pb2.GLITCH_KIND_STRIPES,
    "macroblocking": events_pb2.GLITCH_KIND_MACROBLOCKING,
    "green": events_pb2.GLITCH_KIND_GREEN,
    "grey": events_pb2.GLITCH_KIND_GREY,
    "freeze": events_pb2.GLITCH_KIND_FREEZE,
    "decode_error": events_pb2.GLITCH_KIND_DECODE_ERROR,
}
# Tiles per classify call: the classifier holds all of a call's tiles as float32 at once
# (0.6 MB each), so a fetch of 64 720p frames (1536 tiles) in one call peaked glitch at 650 MB.
CLASSIFY_TILES = 64
HEALTH_KIND_ENUM = {
    "black": events_pb2.HEALTH_KIND_BLACK,
    "freeze": events_pb2.HEALTH_KIND_FREEZE,
    "silence": events_pb2.HEALTH_KIND_SILENCE,
    "loudness": events_pb2.HEALTH_KIND_LOUDNESS,
    "audio_gap": events_pb2.HEALTH_KIND_AUDIO_GAP,
    "av_drift": events_pb2.HEALTH_KIND_AV_DRIFT,
    "format_change": events_pb2.HEALTH_KIND_FORMAT_CHANGE,
    "no_audio": events_pb2.HEALTH_KIND_NO_AUDIO,
}
MAX_AUDIO_RATE = 384_000
PHASE_ENUM = {"start": events_pb2.PHASE_START, "update": events_pb2.PHASE_UPDATE, "end": events_pb2.PHASE_END}


def parse(msg: Msg, max_width: int = 1920, max_height: int = 1080) -> tuple[str, str, object]:
    """(kind, stream id, decoded message); BadMessage with the reason for bad input."""
    kind, sid = msg.subject.split(".")[3], subjects.stream_of(msg.subject)
    if kind == "frames_glitch":
        frame = decode(media_pb2.VideoFrame, msg.data, sid)
        if frame.format != media_pb2.PIXEL_FORMAT_RGB24:
            raise BadMessage(f"glitch frame is {media_pb2.PixelFormat.Name(frame.format)}, expected RGB24")
        if frame.width > max_width or frame.height > max_height:
            raise BadMessage(f"glitch frame {frame.width}x{frame.height} is larger than {max_width}x{max_height}")
        if frame.width < 1 or frame.height < 1 or len(frame.data) != frame.width * frame.height * 3:
            raise BadMessage(f"frame of {frame.width}x{frame.height} RGB24 needs {frame.width * frame.height * 3} bytes, got {len(frame.data)}")
        return kind, sid, frame
    if kind == "signals":
        return kind, sid, decode(media_pb2.FrameSignals, msg.data, sid)
    if kind == "audio":
        chunk = decode(media_pb2.AudioChunk, msg.data, sid)
        if not 0 < chunk.sample_rate <= MAX_AUDIO_RATE:
            raise BadMessage(f"audio chunk at {chunk.sample_rate} Hz; expected 1 to {MAX_AUDIO_RATE}")
        if len(chunk.pcm_f32le) % 4 or not math.isfinite(chunk.start_s) or chunk.start_s < 0:
            raise BadMessage(f"audio chunk of {len(chunk.pcm_f32le)} bytes at {chunk.start_s} s is not float32 PCM at a media time")
        return kind, sid, chunk
    if kind == "windows":
        return kind, sid, window_record(msg.data, sid)
    raise BadMessage(f"unexpected subject {msg.subject}")


def _from_start(kind: str, message) -> bool:
    """Whether a message is from its stream's very start (see streamsight.lifecycle)."""
    if kind == "windows":
        return message.index == 0
    if kind == "frames_glitch":
        return message.sample_index == 0
    if kind == "audio":
        return message.chunk_index == 0
    return all(s.pts_s < 1.0 for s in message.signals)  # decoder signals of the first second


def to_proto(sid: str, event: GlitchEvent) -> tuple[events_pb2.Glitch, str]:
    """The Glitch message of one detector event and its stable event id."""
    glitch_id = f"{sid}:glitch:{event.incident}"
    suffix = f"update-{event.update}" if event.phase == "update" else event.phase
    msg = events_pb2.Glitch(
        stream_id=sid, glitch_id=glitch_id, phase=PHASE_ENUM[event.phase], kind=KIND_ENUM[event.kind], severity=event.severity,
        start_s=event.start_s, end_s=event.end_s, confidence=event.confidence, thumbnail_jpeg=event.thumbnail_jpeg,
    )
    return msg, f"{glitch_id}:{suffix}"


def health_proto(sid: str, event: HealthEvent) -> tuple[events_pb2.HealthIncident, str]:
    """The HealthIncident message of one health event and its stable event id."""
    incident_id = f"{sid}:health:{event.incident}"
    suffix = f"update-{event.update}" if event.phase == "update" else event.phase
    msg = events_pb2.HealthIncident(
        stream_id=sid, incident_id=incident_id, phase=PHASE_ENUM[event.phase], kind=HEALTH_KIND_ENUM[event.kind],
        severity=event.severity, start_s=event.start_s, end_s=event.end_s, detail=event.detail, value=event.value,
        detected_at_s=event.detected_at_s,
    )
    return msg, f"{incident_id}:{suffix}"


@dataclass
class _Stream:
    """What the glitch stage keeps for one stream: its detector, its health checks and its window bounds."""

    detector: StreamDetector
    health: StreamHealth
    bounds: WindowBounds


class GlitchService(Service):
    name = "glitch"
    Settings = GlitchSettings
    settings: GlitchSettings

    async def start(self) -> None:
        s = self.settings
        self.detector_config = DetectorConfig(
            open_score=s.open_score, suspect_score=s.suspect_score, close_after_s=s.close_after_s,
            freeze_min_s=s.freeze_min_s, update_every_s=s.update_every_s, report_freeze=False,
        )
        self.health_config = s.health_config()
        self.classifier = await asyncio.to_thread(GlitchClassifier, s.model_path, s.intra_threads or None)
        await asyncio.to_thread(self.classifier.warm_up)
        self.streams: StreamTable[_Stream] = StreamTable(self.name, idle_s=s.stream_idle_s)
        self._trimmer = heap.Trimmer()
        self._worker = Worker(self.name)  # classifier, detectors and trims in one thread of its own (streamsight.worker)
        self._lag = MediaLag(self.name)  # streamsight_stage_lag_seconds{stage="glitch"}
        self._lag_task = asyncio.create_task(self._watch_lag(), name="glitch:lag")
        self.bus.consume_batches(
            "glitch",
            [subjects.media("frames_glitch"), subjects.media("signals"), subjects.media("audio"), subjects.media("windows")],
            self.on_batch,
            subjects.MEDIA_STREAM,
            batch=s.fetch_batch,
            inactive_threshold_s=300,
        )

    def health_info(self) -> dict[str, str]:
        return {"provider": self.classifier.provider, "model": self.classifier.path.name}

    async def stop(self) -> None:
        self._lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._lag_task

    async def _watch_lag(self) -> None:
        """Ingest's position in every stream held, from MEDIA, for the lag gauge."""
        while True:
            await asyncio.sleep(5.0)
            await self._lag.poll_heads(self.bus.js)

    async def _publish(self, sid: str, event: GlitchEvent) -> None:
        """Publish one event; while NATS is away it is retried in place: the batch is in the
        detectors' state already, and a redelivered batch would feed them its frames twice."""
        glitch, event_id = to_proto(sid, event)
        await until_done(lambda: self.bus.publish_event(sid, glitch, event_id), "publishing a glitch event", stream_id=sid)
        self.log.info("glitch", stream_id=sid, phase=event.phase, kind=event.kind, start_s=event.start_s, end_s=event.end_s)

    async def _publish_health(self, sid: str, event: HealthEvent) -> None:
        incident, event_id = health_proto(sid, event)
        await until_done(lambda: self.bus.publish_event(sid, incident, event_id), "publishing a health event", stream_id=sid)
        self.log.info("health", stream_id=sid, phase=event.phase, kind=event.kind, start_s=event.start_s, end_s=event.end_s, detail=event.detail)

    def _stream(self, sid: str, kind: str, message) -> _Stream | None:
        """The stream's entry (lifecycle policy); a window record is checked against its bounds."""
        window_s = self.settings.window_s
        if kind == "windows" and sid not in self.streams:
            WindowBounds(window_s).check(message)  # a first message far into the stream is forged
        make = lambda: _Stream(StreamDetector(self.detector_config), StreamHealth(self.health_config), WindowBounds(window_s))  # noqa: E731
        stream = self.streams.entry(sid, make, from_start=_from_start(kind, message))
        if stream is not None and kind == "windows":
            stream.bounds.check(message)
        return stream

    def _classify(self, images: list[np.ndarray]) -> list[FrameScore]:
        """Classify in groups of about CLASSIFY_TILES tiles (the model's batches stay full)."""
        out: list[FrameScore] = []
        group: list[np.ndarray] = []
        tiles = 0
        for image in images:
            n = len(grid(*image.shape[:2]))
            if group and tiles + n > CLASSIFY_TILES:
                out += self.classifier.classify(group)
                group, tiles = [], 0
            group.append(image)
            tiles += n
        return out + self.classifier.classify(group) if group else out

    async def on_batch(self, msgs: list[Msg]) -> dict[int, str]:
        rejected: dict[int, str] = {}
        parsed: list[tuple[int, str, str, object]] = []
        for i, msg in enumerate(msgs):
            try:
                parsed.append((i, *parse(msg, self.settings.max_frame_width, self.settings.max_frame_height)))
            except BadMessage as exc:
                rejected[i] = str(exc)
        frames = [(i, m) for i, kind, _, m in parsed if kind == "frames_glitch"]
        images = [np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3) for _, m in frames]
        scores: dict[int, FrameScore] = {}
        if images:
            results = await self._worker.run(self._classify, images)
            scores = {i: r for (i, _), r in zip(frames, results)}
        rgb = {i: img for (i, _), img in zip(frames, images)}
        touched: dict[str, list[GlitchEvent]] = {}
        health: dict[str, list[HealthEvent]] = {}
        ended = False
        for i, kind, sid, m in parsed:
            try:
                stream = self._stream(sid, kind, m)
            except BadMessage as exc:
                rejected[i] = str(exc)
                continue
            if stream is None:
                continue  # a late or redelivered message of a finished stream (counted)
            detector = stream.detector
            out = touched.setdefault(sid, [])
            health.setdefault(sid, []).extend(feed(stream.health, kind, m))
            if kind == "frames_glitch":
                stream.bounds.saw_media(m.pts_s)
                detector.add_frame(m.pts_s, scores[i], rgb[i])
                self._lag.handled(sid, m.pts_s)
            elif kind == "signals":
                detector.add_signals([Signal(s.pts_s, s.is_corrupt, s.frames_missing, s.frozen, s.keyframe) for s in m.signals], m.decode_errors)
                out += await self._worker.run(detector.advance)
            elif kind == "windows":
                if m.last:
                    out += await self._worker.run(detector.finish)
                    self.streams.finish(sid)
                    self._lag.forget(sid)
                    ended = True
                else:
                    out += await self._worker.run(detector.advance, m.end_s)
                    self._lag.handled(sid, m.end_s)
        for sid, stream in self.streams.idle():  # ingest vanished without a last record
            self.log.warning("stream idle; its open incident is ended", stream_id=sid)
            touched.setdefault(sid, []).extend(await self._worker.run(stream.detector.finish))
            health.setdefault(sid, []).extend(stream.health.finish())
            self._lag.forget(sid)
            ended = True
        for sid, events in touched.items():
            for event in events:
                await self._publish(sid, event)
        for sid, found in health.items():
            for incident in found:
                await self._publish_health(sid, incident)
        if self._trimmer.due(ended):
            await self._worker.run(self._trimmer.trim)
        return rejected
