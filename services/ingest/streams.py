"""One ingested stream inside the service: its pipeline, its publishing loop, its clip buffer.

`IngestedStream.run()` turns pipeline items into NATS messages (see messages.py) and hands them
to MEDIA through the stream's `MediaAdmission` (admission.py), which owns pacing and the one
drop policy: a file waits and never drops; a live source drops sampled frames only, counted,
and never window records, audio, decoder signals or statuses. The newest window record is held
back until the next item shows whether the stream goes on, so exactly one record per stream
carries `last=True`; it also reports the frames of its window that were dropped.

Resume (resume.py): after each window record the stream saves how far it got. A stream started
again from such a point after a crash publishes nothing of the windows already published: a file
is decoded again from its start (so every frame, sample and chunk gets the same number and
message id as before, and what the killed run sent past its last save is dropped by JetStream's
duplicate window), a live source goes on from now, its media clock and numbering continued past
the outage. Its first status says reason "resumed" and the outage in gap_s; when another replica
took the stream over from a dead one (service.py), the detail names both.

Hand-over: a stream whose placement another replica took stops here without a word (no last
window record, no status, its resume point kept): the new holder goes on from that point.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from pathlib import Path

import structlog

from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.telemetry import MESSAGES_FAILED

from . import messages
from .admission import MediaAdmission
from .clips import Clip, ClipBufferConfig
from .clipstore import ClipStore
from .decode import DecodeConfig
from .errors import ErrorCode, IngestError
from .items import AudioChunk, FrameSignals, StatusEvent, StatusKind
from .outbound import Outbound, OutboundEncoder
from .pipeline import IngestConfig, IngestPipeline, Pacing, ReconnectPolicy
from .resume import SAMPLE_MARGIN, ResumePoint, ResumeStore
from .sampling import ConsumerSpec, SamplingConfig
from .settings import IngestSettings
from .netguard import NetworkPolicy
from .source import SourceOptions
from .transcode import BROWSER_VIDEO, to_h264

log = structlog.get_logger(__name__)
TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED}


def source_options(settings: IngestSettings) -> SourceOptions:
    return SourceOptions(
        open_timeout=settings.open_timeout_s, read_timeout=settings.read_timeout_s, network=NetworkPolicy.from_settings(settings.allow_networks)
    )


def pipeline_config(settings: IngestSettings, clip_dir: Path, live: bool, extra: dict[str, str]) -> IngestConfig:
    """The pipeline's configuration from settings, overridden per stream by `extra` (fps keys)."""

    def rate(key: str, default: float) -> float:
        try:
            value = float(extra.get(key, default))
        except ValueError:
            raise IngestError(ErrorCode.INVALID_SOURCE, f"option {key}={extra[key]!r} is not a number") from None
        if not 0 < value <= 60:
            raise IngestError(ErrorCode.INVALID_SOURCE, f"option {key}={value} must be in (0, 60] frames per second")
        return value

    sampling = SamplingConfig(
        flow=ConsumerSpec(fps=rate("flow_fps", settings.flow_fps), format="gray", width=settings.flow_width),
        cnn=ConsumerSpec(fps=rate("cnn_fps", settings.cnn_fps), format="rgb24", width=settings.cnn_size, height=settings.cnn_size),
        glitch=ConsumerSpec(
            fps=rate("glitch_fps", settings.glitch_fps), format="rgb24", max_width=settings.glitch_max_width, max_height=settings.glitch_max_height,
            pass_yuv420p=True,  # glitch converts a yuv420p source's planes itself: half the bytes on MEDIA
        ),
    )
    return IngestConfig(
        decode=DecodeConfig(
            sampling=sampling,
            window_seconds=settings.window_s,
            audio_rate=settings.audio_rate,
            audio_chunk_seconds=settings.audio_chunk_s,
            clip_buffer=ClipBufferConfig(directory=clip_dir / "buffer", seconds=settings.buffer_seconds),
        ),
        source=source_options(settings),
        pacing=Pacing.LIVE if live else Pacing.VOD,
        reconnect=ReconnectPolicy(give_up_after=settings.live_give_up_s),
    )


class IngestedStream:
    def __init__(self, stream_id: str, source: str, config: IngestConfig, bus: Bus, settings: IngestSettings, clip_dir: Path,
                 store: ResumeStore | None = None, point: ResumePoint | None = None, resumed: ResumePoint | None = None,
                 taken_from: str = "", replica: str = ""):
        self.stream_id = stream_id
        self.source = source
        self.bus = bus
        self.settings = settings
        self.clip_dir = clip_dir
        self.pipeline = IngestPipeline(source, config, stream_id=stream_id)
        self.state = common_pb2.STREAM_STATE_STARTING
        self.last_error = ""
        self.duration_s = 0.0
        self.task: asyncio.Task | None = None
        self.ended_at: float | None = None  # time.monotonic() when run() returned
        self.exporting = 0  # clip exports running
        self.stop_requested = False
        self.handed_over = False  # another replica took the stream over: stop without a word (see _stopped)
        self.replica = replica  # the ingest replica running it
        self.taken_from = taken_from  # the dead replica this run took the stream over from, if any
        realtime = config.pacing is not Pacing.VOD  # a file played as live; live URLs are found on opening
        self.media = MediaAdmission(bus, stream_id, settings.max_backlog, settings.media_max_bytes, realtime)
        self._outbound = OutboundEncoder(stream_id, lambda: self.pipeline.stats.media_time, self.media.dropped_in, config.decode.window_seconds)
        self._status_count = 0
        self._log = log.bind(stream_id=stream_id)
        self.store, self.point, self.resumed = store, point, resumed  # point: saved progress; resumed: where this run began
        self._skip_windows = resumed.windows if resumed is not None else 0  # published by an earlier run
        self._window_s = config.decode.window_seconds
        if resumed is not None and resumed.live:  # new media: number it past whatever the killed run sent
            self._outbound.samples = {k: v + SAMPLE_MARGIN for k, v in resumed.samples.items()}
            # OutboundEncoder keeps the audio chunk count to itself; a resumed live stream must not reuse ids
            self._outbound._audio_chunks = resumed.audio_chunks + SAMPLE_MARGIN

    # -- publishing ------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop on request. The task is cancelled too, but a cancellation can be lost inside a
        NATS request (asyncio.wait_for on Python < 3.12), so run() also checks this flag."""
        self.stop_requested = True
        self.pipeline.stop()
        self.media.stop()

    async def run(self) -> None:
        try:
            async for item in self.pipeline.items():
                if self.stop_requested:
                    break
                await self._publish(item)
        except asyncio.CancelledError:
            await self._stopped()
            raise
        except Exception as exc:  # a bug or a lost NATS connection: say so, never crash the service
            MESSAGES_FAILED.labels("ingest", "stream_error").inc()
            self._log.error("stream failed", exc_info=exc)
            await self._report(common_pb2.STREAM_STATE_FAILED, "internal", f"ingest failed: {type(exc).__name__}")
        finally:
            self.pipeline.stop()
        if self.stop_requested:
            await self._stopped()
            return
        await self._flush_window()
        if self.state not in TERMINAL:  # the pipeline finished without saying how
            await self._report(common_pb2.STREAM_STATE_ENDED, "source_ended", "the source ended")

    async def _stopped(self) -> None:
        self.request_stop()
        if self.handed_over:  # the replica that took it publishes from its resume point; no last record, no status here
            return
        await self._flush_window()
        if self.state not in TERMINAL:
            await self._report(common_pb2.STREAM_STATE_STOPPED, "stopped", "ingest stopped on request")

    async def _publish(self, item) -> None:
        self.media.realtime = self.media.realtime or self.pipeline.live
        published = not self._skip_windows or self._after_resume_point(item)
        for out in self._outbound.encode(item):  # what goes on MEDIA: outbound.py
            if out.kind == "window" or out.kind == "frame" or published:
                await self._send(out)
        if isinstance(item, StatusEvent):
            status = messages.stream_status(self.stream_id, item)
            if item.kind == StatusKind.STARTED:
                self.duration_s = float(item.details.get("duration", 0.0) or 0.0)
                status.duration_s = self.duration_s
                if self.resumed is not None:
                    self._resumed_status(status)
                if self.point is not None and self.point.live != self.pipeline.live:  # a live HLS playlist: known once opened
                    self.point.live = self.pipeline.live
                    await self.store.save(self.stream_id, self.point)  # type: ignore[union-attr]
            await self._report_status(status)

    def _after_resume_point(self, item) -> bool:
        """Whether an audio chunk or signals batch is media of a window not published yet."""
        start = self._skip_windows * self._window_s
        if isinstance(item, AudioChunk):
            return item.media_time >= start - 1e-6
        if isinstance(item, FrameSignals):
            times = [sig.media_time for sig in item.signals]
            return (max(times) if times else self.pipeline.stats.media_time) >= start
        return True

    def _resumed_status(self, status: events_pb2.StreamStatus) -> None:
        point = self.resumed
        assert point is not None
        down = max(0.0, time.time() - point.saved_at)
        status.reason = "resumed"
        who = f"ingest replica {self.taken_from} died; {self.replica} took the stream over" if self.taken_from else "ingest restarted"
        if point.live:
            status.gap_s = round(down, 3)
            status.detail = (f"{who}; live source resumed from now at {self.pipeline.config.decode.start_at:.1f} s "
                             f"after at most {down:.1f} s without media (window records up to {point.windows - 1} were out)")
        else:
            status.detail = (f"{who}; file resumed at window {point.windows} "
                             f"({point.windows * self._window_s:.1f} s), {down:.1f} s after its last saved window")

    async def _flush_window(self) -> None:
        """The held window record goes out as the stream's last (the pipeline ended or stopped)."""
        for out in self._outbound.finish():
            await self._send(out)

    async def _send(self, out: Outbound) -> None:
        if out.kind == "frame":
            if out.window >= self._skip_windows:
                await self.media.frame(out.consumer, out.window, out.subject, out.data, out.msg_id)
            return
        if out.kind == "window" and self._skip_windows and int(str(out.msg_id).rsplit(":", 1)[1]) < self._skip_windows:
            return  # an earlier run published it
        await self.media.message(out.subject, out.data, out.msg_id, out.kind)
        if out.kind == "window":
            await self._save_progress()

    async def _save_progress(self) -> None:
        if self.store is None or self.point is None:
            return
        enc = self._outbound
        self.point.windows = enc.windows
        self.point.live = self.pipeline.live  # a live HLS playlist is known to be live once opened
        self.point.media_time_s = self.pipeline.stats.media_time
        self.point.samples = dict(enc.samples)
        self.point.audio_chunks = enc._audio_chunks  # see __init__
        await self.store.save(self.stream_id, self.point)

    async def _report(self, state: int, reason: str, detail: str) -> None:
        await self._report_status(
            events_pb2.StreamStatus(
                stream_id=self.stream_id, state=state, reason=reason, detail=detail, media_time_s=self.pipeline.stats.media_time, reporter="ingest"
            )
        )

    async def _report_status(self, status: events_pb2.StreamStatus) -> None:
        if status.state in TERMINAL:
            status.windows = self._outbound.windows
        if status.state != common_pb2.STREAM_STATE_UNSPECIFIED:
            self.state = status.state
        if status.state == common_pb2.STREAM_STATE_FAILED:
            self.last_error = status.detail
        self._status_count += 1
        self._log.info("status", state=common_pb2.StreamState.Name(status.state), reason=status.reason, detail=status.detail)
        run = self.point.run if self.point is not None else 0
        tag = f"r{run}:" if run else ""  # a resumed run's statuses must not be taken for the first run's duplicates
        await self.bus.publish_event(self.stream_id, status, f"{self.stream_id}:status:ingest:{tag}{self._status_count}")
        if status.state in TERMINAL and self.store is not None:
            await self.store.forget(self.stream_id)

    # -- clips -----------------------------------------------------------------------
    @property
    def clip_buffer(self):
        return self.pipeline.clip_buffer

    async def export(self, start_s: float, end_s: float, key: str, store: ClipStore) -> common_pb2.ClipRef:
        """Cut [start_s, end_s] from the packet buffer into an MP4 and keep it in ``store``.

        ``key`` is the caller's name for the clip (fusion's ``highlight-<n>``; by default one
        derived from the range): asking again with the same key (a retry) gives the clip already
        stored. The clip's id, by which it is read, is random and says nothing of the stream or
        the window, so nobody reads a clip whose id they were not given.
        """
        key = key or hashlib.sha1(f"{start_s:.3f}-{end_s:.3f}".encode()).hexdigest()[:12]
        span = self.clip_dir / f"{key}.json"  # the media times the clip covers, its id and file
        if span.exists():
            saved = json.loads(span.read_text())
            found = await store.find(self.stream_id, self.clip_dir, saved["file"])
            if found is not None and "clip_id" in saved:
                return common_pb2.ClipRef(
                    clip_id=saved["clip_id"], uri=found[0], start_s=saved["start_s"], end_s=saved["end_s"], size_bytes=found[1]
                )
        clip_id = secrets.token_hex(16)
        self.exporting += 1
        try:
            clip = await asyncio.to_thread(self.export_clip, start_s, end_s, clip_id, key)
        finally:
            self.exporting -= 1
        uri, size = await store.keep(self.stream_id, clip.path)
        return common_pb2.ClipRef(clip_id=clip_id, uri=uri, start_s=clip.start, end_s=clip.end, size_bytes=size)

    def export_clip(self, start_s: float, end_s: float, clip_id: str, key: str = "") -> Clip:
        """Cut the clip file into the clip folder and record its span under `key` (blocking: run in a thread).

        H.264 sources are cut by stream copy into MP4; other video (HEVC, VP9, MPEG-4 part 2, ...)
        is copied into Matroska first, then that clip alone is re-encoded to H.264 in MP4.
        """
        buffer = self.clip_buffer
        if buffer is None:
            raise IngestError(ErrorCode.CLIP_OUT_OF_RANGE, "no media has been buffered for this stream yet")
        if buffer.video_codec is not None and buffer.video_codec not in BROWSER_VIDEO:
            copy = self._cut(buffer, start_s, end_s, f"{clip_id}.copy", ".mkv")  # Matroska holds any codec
            try:
                dest, tmp = self.clip_dir / f"{clip_id}.mp4", self.clip_dir / f"{clip_id}.part.mp4"
                to_h264(copy.path, tmp)
                tmp.replace(dest)
            finally:
                copy.path.unlink(missing_ok=True)
            clip = Clip(dest, copy.start, copy.end)
        else:
            try:
                clip = self._cut(buffer, start_s, end_s, clip_id, ".mp4")
            except IngestError as err:
                if err.code is not ErrorCode.UNSUPPORTED_CODEC:
                    raise
                clip = self._cut(buffer, start_s, end_s, clip_id, ".mkv")  # audio MP4 cannot hold: keep Matroska
        span = self.clip_dir / f"{key or clip_id}.json"
        span.write_text(json.dumps({"clip_id": clip_id, "file": clip.path.name, "start_s": clip.start, "end_s": clip.end}))
        return clip

    def _cut(self, buffer, start_s: float, end_s: float, clip_id: str, suffix: str) -> Clip:
        dest = self.clip_dir / f"{clip_id}{suffix}"
        tmp = self.clip_dir / f"{clip_id}.part{suffix}"
        clip = buffer.export(start_s, end_s, tmp)
        tmp.replace(dest)
        return Clip(dest, clip.start, clip.end)
