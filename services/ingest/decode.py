"""Per-stream decode state: packets in, typed items out (frames, signals, audio, windows).

:class:`StreamDecoder` survives reconnects: each new container is attached with
:meth:`StreamDecoder.attach`, while the media clock, signal trackers, samplers, audio
chunker, windows and clip buffer carry on. The work per decoded frame is bookkeeping
plus the tiny freeze grid. Converting a sampled frame and writing a packet to the clip
buffer are left as :mod:`~.deferred` jobs in the output, for the pipeline's second worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import av
import structlog

from streamsight.telemetry import DECODE_ERRORS

from .audio import AudioChunker
from .clips import ClipBuffer, ClipBufferConfig
from .deferred import ClipJob, ConvertJob, Entry
from .items import AudioChunk, FrameSignal, FrameSignals, WindowRecord
from .sampling import Sampler, SamplingConfig
from .signals import SignalTracker
from .sourceformat import AudioFormat, FormatTracker, VideoFormat
from .windows import WindowAccumulator

log = structlog.get_logger(__name__)

# A window closes once every stream has passed its end, or once any stream is this far past it.
_WINDOW_SLACK = 3.0
# A live source's window closes once both tracks reached its end; the tolerance absorbs the
# rounding of PTS times frame duration (a frame ending exactly on the boundary closes it).
_LIVE_SETTLE_S = -1e-6
# A new connection whose timestamps start this far before what we already had is a reset clock.
_CLOCK_RESET = 60.0
MOV_DEMUX_LEAD_S = 1.0  # FFmpeg's mov demuxer: AV_TIME_BASE in mov_find_next_sample


@dataclass(frozen=True)
class DecodeConfig:
    """What the decoder produces; see :class:`~.sampling.SamplingConfig` for the frame consumers."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    audio: bool = True
    audio_rate: int = 32000
    audio_chunk_seconds: float = 1.0
    window_seconds: float = 10.0
    batch_seconds: float = 1.0
    freeze_threshold: float = 0.5
    decoder_threads: int = 0  # 0 = FFmpeg picks (one per core)
    # A source read in real time needs only real-time speed, and several of them share the cores:
    # one decoding thread each cost 8 % less CPU than FFmpeg's choice (bench/README.md).
    realtime_decoder_threads: int = 1
    clip_buffer: ClipBufferConfig | None = None
    start_at: float = 0.0  # media time of the first packet: a live stream resumed after a crash continues its clock


@dataclass
class DecodeStats:
    packets: int = 0
    frames_decoded: int = 0
    decode_errors: int = 0
    corrupt_frames: int = 0
    sampled_frames: int = 0
    audio_seconds: float = 0.0
    media_time: float = 0.0


class StreamDecoder:
    """Decodes one stream's packets; read what it produced from :meth:`take`.

    :meth:`take` returns items and deferred jobs in stream order; pass the list through
    :func:`~.deferred.complete` (in any one thread) to get the finished items.
    """

    def __init__(self, config: DecodeConfig) -> None:
        self.config = config
        self.threads = config.decoder_threads  # the video decoder's thread count (0: FFmpeg's choice), set by attach
        self.stats = DecodeStats()
        self.pending: list[Entry] = []
        self.pending_frames = 0  # ConvertJobs in pending: each holds a decoded picture
        self._clip_jobs: list[ClipJob] = []  # in packet order; independent of the items' order
        self.flush_due = False
        self.windows = WindowAccumulator(config.window_seconds)
        self._file_settle = self.windows.settle  # what files keep; a live source closes at _LIVE_SETTLE_S
        self._v_tail = 0.0  # added to the video's progress when windows close (attach: live sources)
        self.formats = FormatTracker()
        self._vcodec = self._acodec = ""
        self._vrate = 0.0  # the container's frame rate, when the codec gives none
        self.samplers = [Sampler(n, s) for n, s in config.sampling.consumers().items()]
        self.tracker: SignalTracker | None = None
        self.chunker = AudioChunker(config.audio_rate, config.audio_chunk_seconds) if config.audio else None
        self.clip_buffer: ClipBuffer | None = None
        self.origin: float | None = None  # PTS seconds of media time 0
        self.vstream: av.video.stream.VideoStream | None = None
        self.astream: av.audio.stream.AudioStream | None = None
        self._vctx: av.video.codeccontext.VideoCodecContext | None = None
        self._actx: av.audio.codeccontext.AudioCodecContext | None = None
        self._vtb = self._atb = 0.0
        self._demux_lead = 0.0  # how far ahead of audio the container's demuxer may hand out video
        self._signals: list[FrameSignal] = []
        self._errors_since = 0
        self._next_batch = config.batch_seconds
        self._v_prog: float | None = None  # media time reached by video frames
        self._a_prog: float | None = None  # media time reached by emitted audio
        self._last_vdts: float | None = None  # dedupe after a reconnect
        self._last_apts: float | None = None
        self._need_key = False

    @property
    def streams(self) -> list[av.stream.Stream]:
        return [s for s in (self.vstream, self.astream) if s is not None]

    # -- connection lifecycle ---------------------------------------------------------

    def attach(self, container: av.container.InputContainer, *, wall_gap: float = 0.0, realtime: bool = False, live: bool = False) -> None:
        """Start decoding a (new) container; the media clock continues from the previous one.
        `realtime`: the source is read at its own pace (live, or a file played as live).
        `live`: a live source: a window closes as soon as both tracks reached its end (see
        _LIVE_SETTLE_S), not half a second of media later: at the live edge that half second
        comes with the next HLS segment, a second or more of wall time (files and files played
        as live keep the settle, and so their windows)."""
        self.vstream = container.streams.video[0] if container.streams.video else None
        self.astream = container.streams.audio[0] if (container.streams.audio and self.config.audio) else None
        if self.vstream is not None:
            self._vctx = self.vstream.codec_context
            self._vctx.thread_type = "AUTO"
            self._vctx.thread_count = self.threads = self.config.realtime_decoder_threads if realtime else self.config.decoder_threads
            self._vtb = float(self.vstream.time_base)
            self._vcodec = self._vctx.name
            rate = self.vstream.average_rate or self.vstream.guessed_rate
            self._vrate = float(rate) if rate else 0.0
            # The last frame of a window has its PTS a frame before the window's end.
            self._v_tail = 1.0 / self._vrate if live and self._vrate else 0.0
            if self.tracker is None:
                rate = self.vstream.average_rate or self.vstream.guessed_rate
                self.tracker = SignalTracker(1.0 / float(rate) if rate else None,
                                             freeze_threshold=self.config.freeze_threshold)
        if self.astream is not None:
            self._actx = self.astream.codec_context
            self._atb = float(self.astream.time_base)
            self._acodec = self._actx.name
        self._demux_lead = demux_lead_max(container)
        self.windows.settle = _LIVE_SETTLE_S if live else self._file_settle
        if self.chunker is not None:
            self.chunker.eager = live
        start = _start_seconds(self.vstream or self.astream)
        reconnect = self.origin is not None
        if self.origin is None:
            self.origin = start - self.config.start_at if start is not None else None
        elif start is not None and start - self.origin < self.stats.media_time - _CLOCK_RESET:
            # The new connection restarted its clock: continue after what we had, plus the outage.
            self.origin = start - (self.stats.media_time + wall_gap)
        self._need_key = reconnect
        if self.config.clip_buffer is not None:
            if self.clip_buffer is None:
                self.clip_buffer = ClipBuffer(self.config.clip_buffer, self.streams)
            else:  # after the packets of the old connection
                self._clip_jobs.append(ClipJob(self.clip_buffer, call=partial(self.clip_buffer.set_templates, self.streams)))

    def detach(self) -> None:
        """Drain the decoders of the current container (frames still inside them come out)."""
        for ctx, on_frame in ((self._vctx, self._on_video), (self._actx, self._on_audio)):
            if ctx is None:
                continue
            try:
                for frame in ctx.decode(None):
                    on_frame(frame)
            except av.error.FFmpegError:
                self._error()
        self._vctx = self._actx = None
        self.vstream = self.astream = None

    def finish(self) -> None:
        """End of stream: last audio, last signals, and every remaining window."""
        self.detach()
        if self.chunker is not None:
            for chunk in self.chunker.flush():
                self._emit_audio(chunk)
        self._flush_signals()
        end = max(self._v_prog or 0.0, self._a_prog or 0.0)
        self.pending.extend(self._with_formats(self.windows.finish(end)))
        if self.clip_buffer is not None:
            self._clip_jobs.append(ClipJob(self.clip_buffer, call=self.clip_buffer.close))
        self.flush_due = True

    def release(self) -> None:
        """The stream is over and no thread uses this decoder any more: free what decoding held.

        Samplers hold swscale contexts with their thread pools, the signal tracker and audio
        chunker hold frames, and the clip buffer holds the input streams (with their decoders).
        What stays is what a finished stream is asked about: ``stats``, the windows' books and
        the clip buffer's segments, which stay readable for clips.
        """
        self.samplers = []
        self.tracker = None
        self.chunker = None
        self.pending, self._clip_jobs, self._signals = [], [], []
        self.pending_frames = 0
        self.vstream = self.astream = None
        self._vctx = self._actx = None
        if self.clip_buffer is not None:
            self.clip_buffer.close()

    def after_packets(self, call) -> None:
        """Run ``call`` in the finishing thread once the clip jobs of the packets so far have run."""
        self._clip_jobs.append(ClipJob(self.clip_buffer, call=call))

    def first_time_since(self, frame_index: int) -> float:
        """Media time of the decoded frame number ``frame_index`` if it is still at hand."""
        for sig in self._signals:
            if sig.index == frame_index:
                return sig.media_time
        for item in self.pending:
            if isinstance(item, FrameSignals):
                for sig in item.signals:
                    if sig.index == frame_index:
                        return sig.media_time
        return self._v_prog or 0.0

    def take(self) -> list[Entry]:
        out, self.pending, self.flush_due, self.pending_frames = self.pending, [], False, 0
        if self._clip_jobs:
            out += self._clip_jobs
            self._clip_jobs = []
        return out

    # -- packets ----------------------------------------------------------------------

    def process(self, packet: av.Packet) -> float | None:
        """Decode one demuxed packet; returns its media time (for pacing) or None."""
        if packet.size == 0:  # the demuxer's end-of-stream marker; detach() drains instead
            return None
        stream = packet.stream
        if self.origin is None and packet.pts is not None:  # no start time in the headers
            self.origin = float(packet.pts * packet.time_base) - self.config.start_at
        if stream is self.vstream:
            return self._video_packet(packet)
        if stream is self.astream:
            return self._audio_packet(packet)
        return None

    def _video_packet(self, packet: av.Packet) -> float | None:
        tb, origin = self._vtb, self.origin or 0.0
        pts_t = packet.pts * tb - origin if packet.pts is not None else None
        dts_t = packet.dts * tb - origin if packet.dts is not None else pts_t
        key = packet.is_keyframe
        if self._need_key:  # after a reconnect: resume at a keyframe we have not decoded yet
            if not key or (dts_t is not None and self._last_vdts is not None and dts_t <= self._last_vdts + 1e-3):
                return None
            self._need_key = False
        if dts_t is not None:
            self._last_vdts = dts_t
        self.stats.packets += 1
        if pts_t is not None:
            self.windows.get(pts_t).video_packets += 1
        try:
            frames = self._vctx.decode(packet)  # type: ignore[union-attr]
        except av.error.FFmpegError:
            frames = ()
            self._error()
        for frame in frames:
            self._on_video(frame)
        if self.clip_buffer is not None and pts_t is not None:
            self._clip_jobs.append(ClipJob(self.clip_buffer, (packet, "video", pts_t, dts_t, key)))
        return pts_t

    def _audio_packet(self, packet: av.Packet) -> float | None:
        pts_t = packet.pts * self._atb - (self.origin or 0.0) if packet.pts is not None else None
        if pts_t is not None and self._last_apts is not None and pts_t <= self._last_apts + 1e-4:
            return None  # already seen (a reconnect replays the live edge)
        if pts_t is not None:
            self._last_apts = pts_t
        self.stats.packets += 1
        try:
            frames = self._actx.decode(packet)  # type: ignore[union-attr]
        except av.error.FFmpegError:
            frames = ()
            self._error()
        for frame in frames:
            self._on_audio(frame)
        if self.clip_buffer is not None and pts_t is not None:
            self._clip_jobs.append(ClipJob(self.clip_buffer, (packet, "audio", pts_t, None, True)))
        return pts_t

    # -- frames -----------------------------------------------------------------------

    def _on_video(self, frame: av.VideoFrame) -> None:
        if frame.pts is not None:
            t = frame.pts * self._vtb - (self.origin or 0.0)
        else:  # no timestamp: one nominal frame after the previous one
            fd = (self.tracker.frame_duration if self.tracker else None) or 1 / 30
            t = (self._v_prog + fd) if self._v_prog is not None else 0.0
        sig = self.tracker.observe(frame, t)  # type: ignore[union-attr]
        rate = self._vctx.framerate if self._vctx is not None else None
        self.formats.video(t, VideoFormat(frame.width, frame.height, round(float(rate), 3) if rate else self._vrate, self._vcodec))
        self._signals.append(sig)
        stats = self.stats
        stats.frames_decoded += 1
        rec = self.windows.get(t)
        rec.frames_decoded += 1
        if sig.is_corrupt:
            rec.corrupt_frames += 1
            stats.corrupt_frames += 1
        if sig.frozen:
            rec.frozen_frames += 1
        if sig.missing_frames:
            rec.gaps += 1
            rec.gap_seconds += sig.gap_before
            rec.missing_frames += sig.missing_frames
        for sampler in self.samplers:
            if sampler.due(t):
                self.pending.append(ConvertJob(sampler, frame, sig.index, t, rec.index))
                self.pending_frames += 1
                stats.sampled_frames += 1
        if self._v_prog is None or t > self._v_prog:
            self._v_prog = t
            self._progress(t)

    def _on_audio(self, frame: av.AudioFrame) -> None:
        if self.chunker is None:
            return
        if frame.pts is not None:
            t = frame.pts * self._atb - (self.origin or 0.0)
        else:
            t = self._a_prog or 0.0
        self.formats.audio(t, AudioFormat(self._acodec, frame.layout.name, frame.sample_rate))
        for chunk in self.chunker.push(frame, t):
            self._emit_audio(chunk)

    def _emit_audio(self, chunk: AudioChunk) -> None:
        chunk.demux_lead_max = self._demux_lead
        self.pending.append(chunk)
        start, end = chunk.media_time, chunk.media_time + chunk.duration
        self.stats.audio_seconds += chunk.duration
        w = self.windows.length
        t = start
        while t < end - 1e-9:  # split the chunk's seconds over the windows it covers
            rec = self.windows.get(max(t, 0.0))
            stop = min(end, (rec.index + 1) * w) if t >= 0 else min(end, 0.0)
            rec.audio_seconds += stop - t
            t = stop if stop > t else end
        self._a_prog = end if self._a_prog is None else max(self._a_prog, end)
        self._progress(end)

    def _error(self) -> None:
        self._errors_since += 1
        self.stats.decode_errors += 1
        DECODE_ERRORS.inc()
        t = self._v_prog if self._v_prog is not None else 0.0
        self.windows.get(t).decode_errors += 1

    def _progress(self, t: float) -> None:
        self.stats.media_time = max(self.stats.media_time, t)
        if t >= self._next_batch:
            self._flush_signals()
            self._next_batch = (t // self.config.batch_seconds + 1) * self.config.batch_seconds
        has_v, has_a = self._v_prog is not None, self._a_prog is not None
        both = [p for p in (None if self._v_prog is None else self._v_prog + self._v_tail, self._a_prog) if p is not None]
        if has_v and has_a and self.astream is not None and self.vstream is not None:
            closing = max(min(both), max(both) - _WINDOW_SLACK)
        else:
            closing = max(both)
        done = self.windows.advance(closing)
        if done:
            self._flush_signals()  # signals of a window arrive before its record
            self.pending.extend(self._with_formats(done))

    def _with_formats(self, records: list[WindowRecord]) -> list[WindowRecord]:
        for rec in records:
            rec.source_formats = self.formats.for_window(rec.start, rec.end)
        if records:
            self.formats.forget_before(records[-1].end)
        return records

    def _flush_signals(self) -> None:
        if self._signals or self._errors_since:
            self.pending.append(FrameSignals(self._signals, self._errors_since))
            self._signals, self._errors_since = [], 0
        self.flush_due = True


def demux_lead_max(container: av.container.InputContainer) -> float:
    """How far ahead of its audio `container`'s demuxer may hand out video, where the container
    sets a bound (0: none known). FFmpeg's MP4/MOV demuxer takes the next sample by file position
    among samples whose timestamps lie within 1 s of each other (by timestamp beyond that), so a
    file whose muxer wrote the audio after the video comes out with the audio up to 1 s behind."""
    return MOV_DEMUX_LEAD_S if "mov" in container.format.name.split(",") else 0.0


def _start_seconds(stream: av.stream.Stream | None) -> float | None:
    if stream is None or stream.start_time is None:
        return None
    return float(stream.start_time * stream.time_base)
