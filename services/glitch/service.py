"""Glitch service: ingest's glitch frames, decoder signals and audio in; glitch and health incidents out.

Partitioned (streamsight.partitions, group "glitch"): the replicas share the streams'
partitions, and for each partition it holds a replica runs one durable batch consumer
("glitch-p<k>") reading frames_glitch, signals, audio and windows of that partition's streams
in stored order. The frames of a batch, from all its streams, are classified together in
a thread (onnxruntime, off the event loop); then each message feeds its stream's
`StreamDetector` in order, and the incidents' START/UPDATE/END phases are published as
events_pb2.Glitch CloudEvents with stable ids "<sid>:glitch:<n>:start|update-<k>|end", so a
redelivered batch is deduplicated by JetStream. Streams follow streamsight.lifecycle's one
policy: the last window record ends the open incident and drops the stream's detector, a
late frame after the end makes no new one, and an idle stream's open incident is ended.
A message that does not decode, or a frame whose size does not match its data, is
dead-lettered; other streams are untouched. Frames come as RGB24 or, from a yuv420p source, as
YUV420P planes (half the bytes on MEDIA), turned into RGB in the worker by one kept swscale
context (services/glitch/picture.py), so every check sees the RGB ingest would have sent. Freed heap is handed back to the OS when a stream
ends and every few seconds of work (streamsight.heap.Trimmer): the classifier's buffers come
from malloc and would otherwise keep every batch's high-water mark.

Stream health (services/glitch/health: black, freeze, silence, loudness, audio_gap, av_drift,
format_change, no_audio) is judged from the same messages by each stream's `StreamHealth` and
published as events_pb2.HealthIncident CloudEvents (type streamsight.health.v1) with ids
"<sid>:health:<n>:start|update-<k>|end". Freeze is reported there, not as a glitch: a frozen
picture is not corruption, and one incident should not come twice.

Takeover: after each batch, its events published, every stream it touched is saved to the KV
bucket `state_bucket` (services/glitch/state.py: a snapshot of the detector, the health checks
and the window bounds, services/glitch/snapshot.py, with the last MEDIA message applied), and
only then is the batch acknowledged. A replica that gains a partition reads its streams'
snapshots, waits until a dead holder's unacknowledged batch is due again (so it comes back
first, in order), and starts the partition's consumer; a message at or below a stream's last
applied one is acknowledged without being applied. A batch applied but not saved is applied
again from the snapshot before it, and its events, published again with the same ids, are
dropped by JetStream's duplicate window. Losing a partition stops its consumer after the batch
in hand and drops its streams here.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from nats.aio.msg import Msg

from services.glitch.classifier import FrameScore, GlitchClassifier
from services.glitch.detector import GlitchEvent, Signal
from services.glitch.health.incidents import HealthEvent
from services.glitch.health.monitor import StreamHealth, feed
from services.glitch.picture import Pictures, check
from services.glitch import snapshot
from services.glitch.settings import GlitchSettings
from services.glitch.snapshot import ResumableDetector
from services.glitch.state import key_of, read_partition, state_bucket
from services.glitch.tiles import grid
from prometheus_client import Counter, Histogram
from streamsight import heap, subjects
from streamsight.applied import Applied
from streamsight.bus import BadMessage, until_done
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.lag import MediaLag
from streamsight.lifecycle import StreamTable
from streamsight.tasks import cancel_and_wait
from streamsight.windows import WindowBounds
from streamsight.media import decode, window_record
from streamsight.partitions import Partitions
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
MEDIA_KINDS = ("frames_glitch", "signals", "audio", "windows")
# A partition's consumer: a holder that died with a batch in hand has it redelivered this long
# after it was fetched (a batch being handled is kept from it by in-progress beats).
GLITCH_ACK_WAIT_S = 5.0
# Bytes a partition's fetch may bring in (one 720p RGB24 frame or two YUV420P ones, and what
# comes with them): all pulls of the connection share streamsight.bus.FETCH_BUDGET (40 MiB), and
# sixteen partitions' idle pulls at the 16 MiB default would take it in turns, each holding it
# for its 1 s linger.
GLITCH_FETCH_BYTES = 3 * 1024 * 1024

SNAPSHOT_BYTES = Histogram("streamsight_glitch_snapshot_bytes", "Size of a stream's glitch snapshot as saved after a batch",
                           buckets=(1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6))
SNAPSHOTS_UNREADABLE = Counter("streamsight_glitch_snapshots_unreadable_total", "Glitch snapshots that could not be read back (the stream started afresh)")
ALREADY_APPLIED = Counter("streamsight_glitch_already_applied_total",
                          "MEDIA messages acknowledged without applying them: their effect was in the snapshot taken over")
PHASE_ENUM = {"start": events_pb2.PHASE_START, "update": events_pb2.PHASE_UPDATE, "end": events_pb2.PHASE_END}


def parse(msg: Msg, max_width: int = 1920, max_height: int = 1080) -> tuple[str, str, object]:
    """(kind, stream id, decoded message); BadMessage with the reason for bad input."""
    kind, sid = msg.subject.split(".")[3], subjects.stream_of(msg.subject)
    if kind == "frames_glitch":
        frame = decode(media_pb2.VideoFrame, msg.data, sid)
        if frame.width > max_width or frame.height > max_height:
            raise BadMessage(f"glitch frame {frame.width}x{frame.height} is larger than {max_width}x{max_height}")
        check(frame)
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
    """What the glitch stage keeps for one stream: its detector, its health checks and its window
    bounds, and the last MEDIA message applied to them (stream sequence, stored time)."""

    detector: ResumableDetector
    health: StreamHealth
    bounds: WindowBounds
    seq: int = 0
    stored_ns: int = 0

    def applied(self, seq: int, stored_ns: int) -> bool:
        """Whether a message is one already in this state (streamsight.applied's rule)."""
        return Applied(self.seq, self.stored_ns).covers(Applied(seq, stored_ns))


class GlitchService(Service):
    name = "glitch"
    Settings = GlitchSettings
    settings: GlitchSettings

    async def start(self) -> None:
        s = self.settings
        self.detector_config = s.detector_config()
        self.health_config = s.health_config()
        self.classifier = await asyncio.to_thread(GlitchClassifier, s.model_path, s.intra_threads or None,
                                                  verifier=s.verifier_path(), verify_from=s.open_score)
        await asyncio.to_thread(self.classifier.warm_up)
        self.streams: StreamTable[_Stream] = StreamTable(self.name, idle_s=s.stream_idle_s)
        self._done: OrderedDict[str, tuple[int, int]] = OrderedDict()  # finished streams: last (seq, stored_ns) applied
        self._trimmer = heap.Trimmer()
        self._worker = Worker(self.name)  # classifier, detectors and trims in one thread of its own (streamsight.worker)
        self._pictures = Pictures()  # used in the worker's thread only
        self._lag = MediaLag(self.name)  # streamsight_stage_lag_seconds{stage="glitch"}
        self._lag_task = asyncio.create_task(self._watch_lag(), name="glitch:lag")
        self.kv = await state_bucket(self.bus, s.state_bucket, s.state_ttl_s)
        self._consumers: dict[int, object] = {}
        self.partitions = Partitions(self.bus, self.name)
        await self.partitions.start(self._gain, self._lose)
        if not await self.partitions.settled():
            self.log.warning("partitions not all taken at start; going on taking them", held=sorted(self.partitions.held))

    def health_info(self) -> dict[str, str]:
        verifier = self.classifier.verifier
        return {"provider": self.classifier.provider, "model": self.classifier.path.name,
                "stripes_verifier": verifier.path.name if verifier is not None else "off",
                "partitions": ",".join(map(str, sorted(self.partitions.held)))}

    async def stop(self) -> None:
        # every partition's last batch handled and its state saved (all at once), then the leases released
        await asyncio.gather(*(consumer.stop() for consumer in self._consumers.values()))
        await self.partitions.stop()
        await cancel_and_wait([self._lag_task])

    # ------------------------------------------------------------------ partitions

    async def _gain(self, partition: int) -> None:
        """Take partition `partition` over: its streams' snapshots, then its consumer."""
        restored, done = await self._restore(partition)
        durable = f"{self.name}-p{partition}"
        await self.bus.wait_for_redeliveries(subjects.MEDIA_STREAM, durable, GLITCH_ACK_WAIT_S, self.partitions.margin_s)
        self._consumers[partition] = self.bus.consume_batches(
            durable, [subjects.media(kind, partition=partition) for kind in MEDIA_KINDS], self.on_batch, subjects.MEDIA_STREAM,
            batch=self.settings.fetch_batch, inactive_threshold_s=300, ack_wait_s=GLITCH_ACK_WAIT_S, max_bytes=GLITCH_FETCH_BYTES,
            holds=lambda: self.partitions.holds(partition),
        )
        await self.bus.wait_consumer(subjects.MEDIA_STREAM, durable)
        self.log.info("partition gained", partition=partition, streams=restored, finished=done)

    async def _lose(self, partition: int) -> None:
        """Hand partition `partition` back: its consumer stops after the batch in hand (whose
        snapshots are saved before its acks), then its streams' state is dropped here."""
        handle = self._consumers.pop(partition, None)
        if handle is not None:
            await handle.stop()
        dropped = [sid for sid in list(self.streams) if subjects.partition_of(sid) == partition]
        for sid in dropped:
            self.streams.release(sid)
            self._lag.forget(sid)
        self.log.info("partition lost", partition=partition, streams=len(dropped))

    async def _restore(self, partition: int) -> tuple[int, int]:
        """The snapshots of the partition's streams into the table; (streams, finished ones)."""
        restored = done = 0
        for data in await read_partition(self.bus, self.settings.state_bucket, partition):
            try:
                state = snapshot.loads(data, self.detector_config, self.health_config)
                sid = state["stream_id"]
            except (snapshot.SnapshotError, KeyError, TypeError) as exc:
                SNAPSHOTS_UNREADABLE.inc()
                self.log.error("glitch snapshot unreadable; its stream starts afresh here", partition=partition, error=repr(exc))
                continue
            if sid in self.streams:
                continue
            if state.get("done"):
                self._finished(sid, state["seq"], state["stored_ns"])
                done += 1
                continue
            stream = _Stream(state["detector"], state["health"], state["bounds"], state["seq"], state["stored_ns"])
            self.streams.entry(sid, lambda: stream, from_start=False)  # noqa: B023 - called at once
            restored += 1
        return restored, done

    def _finished(self, sid: str, seq: int, stored_ns: int) -> None:
        self.streams.finish(sid)
        self._done[sid] = (seq, stored_ns)
        self._done.move_to_end(sid)
        while len(self._done) > self.streams.finished_memory:
            self._done.popitem(last=False)

    async def _save(self, sid: str, stream: _Stream | None) -> None:
        """The stream's snapshot (or, finished, a tombstone with its last message) before the batch is acknowledged."""
        if stream is None:
            seq, stored_ns = self._done[sid]
            data = snapshot.dumps({"stream_id": sid, "done": True, "seq": seq, "stored_ns": stored_ns})
        else:
            stream.detector.thumbnails()
            data = snapshot.dumps({"stream_id": sid, "detector": stream.detector, "health": stream.health, "bounds": stream.bounds,
                                   "seq": stream.seq, "stored_ns": stream.stored_ns})
        SNAPSHOT_BYTES.observe(len(data))
        partition = subjects.partition_of(sid)

        async def put() -> None:  # a replica whose lease ran out must not overwrite its successor's state
            self.partitions.check(partition)
            await self.kv.put(key_of(sid), data)

        await until_done(put, "saving a glitch snapshot", stream_id=sid)

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
        make = lambda: _Stream(ResumableDetector(self.detector_config), StreamHealth(self.health_config), WindowBounds(window_s))  # noqa: E731
        stream = self.streams.entry(sid, make, from_start=_from_start(kind, message))
        if stream is not None and kind == "windows":
            stream.bounds.check(message)
        return stream

    def _score(self, frames: list[media_pb2.VideoFrame]) -> tuple[list[np.ndarray], list[FrameScore]]:
        """The frames' RGB pictures and their scores (in the worker)."""
        images = [self._pictures.rgb(m) for m in frames]
        return images, self._classify(images)

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
        scores: dict[int, FrameScore] = {}
        rgb: dict[int, np.ndarray] = {}
        if frames:
            images, results = await self._worker.run(self._score, [m for _, m in frames])
            scores = {i: r for (i, _), r in zip(frames, results)}
            rgb = {i: img for (i, _), img in zip(frames, images)}
        touched: dict[str, list[GlitchEvent]] = {}
        health: dict[str, list[HealthEvent]] = {}
        ended = False
        for i, kind, sid, m in parsed:
            position = Applied.of(msgs[i])
            seq, stored_ns = position.seq, position.stored_ns
            if self._seen_before(sid, seq, stored_ns):
                ALREADY_APPLIED.inc()  # its effect is in the snapshot this replica took over
                continue
            try:
                stream = self._stream(sid, kind, m)
            except BadMessage as exc:
                rejected[i] = str(exc)
                continue
            if stream is None:
                continue  # a late or redelivered message of a finished stream (counted)
            stream.seq, stream.stored_ns = seq, stored_ns
            detector = stream.detector
            out = touched.setdefault(sid, [])
            health.setdefault(sid, []).extend(feed(stream.health, kind, m, rgb.get(i)))  # a frame: its picture as converted above
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
                    self._finished(sid, seq, stored_ns)
                    self._lag.forget(sid)
                    ended = True
                else:
                    out += await self._worker.run(detector.advance, m.end_s)
                    self._lag.handled(sid, m.end_s)
        for sid, stream in self.streams.idle():  # ingest vanished without a last record
            self.log.warning("stream idle; its open incident is ended", stream_id=sid)
            touched.setdefault(sid, []).extend(await self._worker.run(stream.detector.finish))
            health.setdefault(sid, []).extend(stream.health.finish())
            self._finished(sid, stream.seq, stream.stored_ns)
            self._lag.forget(sid)
            ended = True
        for sid, events in touched.items():
            for event in events:
                await self._publish(sid, event)
        for sid, found in health.items():
            for incident in found:
                await self._publish_health(sid, incident)
        for sid in touched:
            await self._save(sid, self.streams.get(sid))
        if self._trimmer.due(ended):
            await self._worker.run(self._trimmer.trim)
        return rejected

    def _seen_before(self, sid: str, seq: int, stored_ns: int) -> bool:
        """Whether a message's effect is in the stream's state already (a batch its previous
        holder applied and saved, but did not acknowledge before it died)."""
        stream = self.streams.get(sid)
        if stream is not None:
            return stream.applied(seq, stored_ns)
        done = self._done.get(sid)
        return done is not None and Applied(*done).covers(Applied(seq, stored_ns))
