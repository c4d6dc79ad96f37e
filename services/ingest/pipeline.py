"""The ingest driver: demux and decode in a worker thread, typed items to an asyncio consumer.

:class:`IngestPipeline` opens one source and yields :mod:`~.items` through a bounded
queue. Two threads per stream: the decode thread demuxes, decodes and keeps the books
(signals, windows, audio); a finishing thread runs the work it defers -- converting the
sampled frames and writing the clip buffer (see :mod:`~.deferred`) -- one batch at a
time in decode order, so items keep their order and conversion overlaps decoding.
Whichever of the two threads exits last releases the decoder's state (see
:meth:`~.decode.StreamDecoder.release`), so a finished pipeline keeps only its stats and
its clip buffer's segment list.
Container lifetime: the finishing thread's clip jobs use the input container's streams
(their packets, the clip buffer's templates), so the decode thread never closes a container
itself. A container it is done with (a reconnect) is closed by a job queued after its last
packet; whatever is still open when both threads have exited is closed by the last one.
Closing it from the decode thread while the finishing thread still wrote its packets was a
use-after-free: SIGSEGV when a stream was stopped within ~100 ms of starting.
Buffer policy: **wait** -- when a queue is full the thread feeding it blocks, so a slow
consumer slows ingest down instead of growing memory (``vod`` pacing, as fast as the
consumer takes). ``live`` pacing additionally holds each packet until its media time is
due on the wall clock, so a file plays as a live stream.

Live sources (RTMP/RTSP/SRT/Twitch, or an HLS playlist without an end) reconnect with
exponential backoff when they stall or drop; the outage is published as RECONNECTING,
RECONNECTED and GAP status events and the lost media shows as a PTS gap in the frame
signals and windows. A live source that gives no data for ``reconnect.give_up_after``
seconds, or whose playlist gets an end, is ENDED.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import AsyncIterator

import av
import structlog

from .clips import ClipBuffer
from .decode import DecodeConfig, DecodeStats, StreamDecoder
from .deferred import Entry, complete
from .errors import ErrorCode, IngestError, classify
from .items import Item, StatusEvent, StatusKind
from .source import ResolvedSource, SourceOptions, is_live, open_source, resolve

log = structlog.get_logger(__name__)


class Pacing(str, Enum):
    VOD = "vod"  # as fast as the consumer takes items
    LIVE = "live"  # real time: media time t is released at wall start + t


@dataclass(frozen=True)
class ReconnectPolicy:
    """Backoff for a live source: ``initial`` doubling (``factor``) up to ``max_delay`` seconds."""

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0
    give_up_after: float = 30.0  # seconds without new media before the live stream counts as ended


@dataclass(frozen=True)
class IngestConfig:
    """Everything one stream's ingest needs; ``queue_size`` counts batches (at most 1 s of media each).

    A batch is handed over early once it holds ``max_batch_items`` items or
    ``max_batch_frames`` sampled frames still to convert (each holds a decoded picture).
    """

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    source: SourceOptions = field(default_factory=SourceOptions)
    pacing: Pacing = Pacing.VOD
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    queue_size: int = 8
    fast_until: float = 0.0  # live pacing starts at this media time (a file resumed after a crash catches up first)
    max_batch_items: int = 64
    max_batch_frames: int = 2


@dataclass(frozen=True)
class _Gap:
    lost_at: float  # media time reached before the outage
    down_since: float  # time.monotonic() when the source failed
    frames: int  # frames decoded before the outage
    audio: float  # audio seconds before the outage


class _Stopped(Exception):
    """Raised inside the worker when the consumer went away or asked to stop."""


class IngestPipeline:
    """Ingest of one source. Iterate ``async for item in pipeline.items()``; call :meth:`stop` to cancel."""

    def __init__(self, source: str, config: IngestConfig = IngestConfig(), *, stream_id: str = "") -> None:
        self.source = source
        self.config = config
        self.stream_id = stream_id
        self.decoder = StreamDecoder(config.decode)
        self.live = False
        self.reconnects = 0
        self.wall_start: float | None = None  # time.time() when the first packet arrived (live sources)
        self._stop = threading.Event()
        self._slots = threading.Semaphore(max(1, config.queue_size))
        self._queue: asyncio.Queue[list[Item] | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finisher: threading.Thread | None = None
        # Decode thread -> finishing thread; one batch waiting while one is being finished.
        self._handoff: queue.Queue[list[Entry] | None] = queue.Queue(maxsize=1)
        self._container: av.container.InputContainer | None = None
        self._opened: list[av.container.InputContainer] = []  # not closed yet (see the module's docstring)
        self._opened_lock = threading.Lock()
        self._log = log.bind(stream_id=stream_id)
        self._exits = 0  # worker threads that have exited; the second one releases the decoder
        self._exit_lock = threading.Lock()
        self._gap: _Gap | None = None  # an outage waiting for media to resume
        self._last_data = time.monotonic()  # when the last new packet arrived

    @property
    def running(self) -> bool:
        """True while a worker thread is alive."""
        return any(t is not None and t.is_alive() for t in (self._thread, self._finisher))

    @property
    def stats(self) -> DecodeStats:
        return self.decoder.stats

    @property
    def clip_buffer(self) -> ClipBuffer | None:
        return self.decoder.clip_buffer

    def stop(self) -> None:
        """Ask the worker to stop; it emits nothing more and exits at its next check.

        The checks run between packets, in every wait (backoff, pacing, a full queue)
        and while a connection opens, so the thread ends within milliseconds except when
        it sits inside one blocking FFmpeg network read: PyAV gives no way to interrupt
        that from outside, so it ends when the read returns or after ``read_timeout``.
        """
        self._stop.set()

    async def items(self) -> AsyncIterator[Item]:
        """Start the worker and yield its items until the stream ends, fails or is cancelled."""
        if self._thread is not None:
            raise RuntimeError("an IngestPipeline can be iterated only once")
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        name = self.stream_id or "stream"
        self._thread = threading.Thread(target=self._run, name=f"ingest-{name}", daemon=True)
        self._finisher = threading.Thread(target=self._finish, name=f"ingest-finish-{name}", daemon=True)
        self._finisher.start()
        self._thread.start()
        try:
            while True:
                batch = await self._queue.get()
                if batch is None:
                    break
                self._slots.release()
                for item in batch:
                    yield item
        finally:
            self.stop()  # the threads exit by themselves; wait_stopped() waits for them without blocking the loop

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait (without blocking the loop) until the worker threads have exited; True if they have."""
        if self._thread is None:
            return True
        await asyncio.to_thread(self._thread.join, timeout)
        await asyncio.to_thread(self._finisher.join, timeout)  # type: ignore[union-attr]
        return not self.running

    def __aiter__(self) -> AsyncIterator[Item]:
        return self.items()

    # -- finishing thread -------------------------------------------------------------

    def _finish(self) -> None:
        """Run the deferred work of each batch in order and hand the items to the event loop."""
        try:
            while (batch := self._next_batch()) is not None:
                self._deliver(complete(batch))
        except _Stopped:
            pass
        except Exception as exc:  # a bug must not take the service down; report it as FAILED
            self._log.exception("ingest finishing worker crashed")
            self._stop.set()
            failed = StatusEvent(StatusKind.FAILED, self.decoder.stats.media_time,
                                 f"internal error: {type(exc).__name__}: {exc}", ErrorCode.INTERNAL)
            try:
                self._deliver([failed], force=True)
            except _Stopped:
                pass
        finally:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)  # type: ignore[union-attr]
            except RuntimeError:
                pass
            self._worker_exited()

    def _worker_exited(self) -> None:
        with self._exit_lock:
            self._exits += 1
            last = self._exits == 2
        if last:  # no thread uses the decoder or a container any more
            try:  # a batch the stopped finisher never took still holds decoded pictures
                self._handoff.get_nowait()
            except queue.Empty:
                pass
            self.decoder.release()
            with self._opened_lock:
                left, self._opened = self._opened, []
            for container in left:
                _close_quietly(container)

    def _next_batch(self) -> list[Entry] | None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._handoff.get(timeout=0.1)
            except queue.Empty:
                continue

    def _deliver(self, items: list[Item], force: bool = False) -> None:
        """Queue items for the event loop; ``force`` (a last word) waits at most a second for room."""
        if force:
            self._slots.acquire(timeout=1.0)
        while not force and not self._slots.acquire(timeout=0.1):
            if self._stop.is_set():
                raise _Stopped
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, items)  # type: ignore[union-attr]
        except RuntimeError as exc:  # the event loop is closed: nobody is listening
            self._stop.set()
            raise _Stopped from exc

    # -- decode thread ----------------------------------------------------------------

    def _push(self, batch: list[Entry]) -> None:
        """Hand a batch to the finishing thread (blocks while it is busy with the previous one)."""
        if not batch:
            return
        while True:
            try:
                self._handoff.put(batch, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    raise _Stopped from None

    def _end_handoff(self) -> None:
        while self._finisher is not None and self._finisher.is_alive():
            try:
                self._handoff.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def _status(self, kind: StatusKind, message: str = "", code: ErrorCode | None = None, /, **details: object) -> None:
        self._push(self.decoder.take() + [StatusEvent(kind, self.decoder.stats.media_time, message, code, dict(details))])

    def _run(self) -> None:
        try:
            self._ingest()
        except _Stopped:
            pass
        except Exception as exc:  # a bug must not take the service down; report it as FAILED
            self._log.exception("ingest worker crashed")
            try:
                self._status(StatusKind.FAILED, f"internal error: {type(exc).__name__}: {exc}", ErrorCode.INTERNAL)
            except _Stopped:
                pass
        finally:
            self._container = None  # closed by the last thread to exit: the finisher may still write its packets
            self._end_handoff()
            self._worker_exited()

    def _ingest(self) -> None:
        try:
            src = resolve(self.source, self.config.source)
            self._container = self._open(src)
        except IngestError as err:
            self._status(StatusKind.FAILED, err.message, err.code)
            return
        self.live = is_live(src, self._container)
        self.decoder.attach(self._container, realtime=self.live or self.config.pacing is Pacing.LIVE, live=self.live)
        self._status(StatusKind.STARTED, "ingest started", **_describe(src, self._container, self.live),
                     decoder_threads=self.decoder.threads)
        pacer = _Pacer(self._stop) if self.config.pacing is Pacing.LIVE else None
        while True:
            outcome, err = self._demux(pacer)
            if self._stop.is_set():
                raise _Stopped
            if outcome == "eof" and not self.live:
                self._end_of_file()
                return
            if not self.live:  # a VOD read error: report what we got, then fail
                self.decoder.finish()
                assert err is not None
                self._status(StatusKind.FAILED, err.message, err.code)
                return
            if not self._reconnect(src, err, pacer):
                return

    def _demux(self, pacer: _Pacer | None) -> tuple[str, IngestError | None]:
        """Run the current container to its end or first error: ("eof", None) or ("error", err)."""
        dec = self.decoder
        max_items, max_frames = self.config.max_batch_items, self.config.max_batch_frames
        try:
            for packet in self._container.demux(dec.streams):  # type: ignore[union-attr]
                if self._stop.is_set():
                    raise _Stopped
                t = dec.process(packet)
                if self.wall_start is None:
                    self.wall_start = time.time()
                if t is not None:
                    self._last_data = time.monotonic()
                    if self._gap is not None:
                        self._check_gap()
                if pacer is not None and t is not None and t >= self.config.fast_until and pacer.delay(t) > 0.01:
                    self._push(dec.take())  # hand over what is due before waiting
                    pacer.wait(t)
                elif dec.flush_due or len(dec.pending) >= max_items or dec.pending_frames >= max_frames:
                    self._push(dec.take())
            return "eof", None
        except _Stopped:
            raise
        except Exception as exc:
            if self._stop.is_set():
                raise _Stopped from exc
            return "error", classify(exc, self.source)

    def _end_of_file(self) -> None:
        dec = self.decoder
        duration = self._container.duration / av.time_base if self._container and self._container.duration else None
        dec.finish()
        reached = dec.stats.media_time
        if duration and reached < duration - max(1.0, 0.05 * duration):
            self._status(StatusKind.ENDED, f"the file ends at {reached:.1f} s of its announced {duration:.1f} s "
                         "(truncated?)", ErrorCode.TRUNCATED, duration=duration)
        else:
            self._status(StatusKind.ENDED, "end of file", duration=reached)

    def _reconnect(self, src: ResolvedSource, err: IngestError | None, pacer: _Pacer | None) -> bool:
        """Reopen a live source with backoff; False when it is over (ENDED already sent)."""
        policy = self.config.reconnect
        dec = self.decoder
        dec.detach()
        self._retire_container()
        lost_at = dec.stats.media_time
        down_since = time.monotonic()
        last = err  # the latest failure; None: the source just closed the connection
        delay = policy.initial
        attempt = 0
        while True:
            attempt += 1
            reason = last.message if last else "the source closed the connection; checking whether the stream ended"
            waited = time.monotonic() - self._last_data
            if waited >= policy.give_up_after:
                dec.finish()
                self._status(StatusKind.ENDED, f"live stream ended: no data for {waited:.0f} s ({reason})",
                             reconnect_attempts=attempt - 1)
                return False
            self._status(StatusKind.RECONNECTING, reason, last.code if last else None, attempt=attempt, delay=delay)
            if self._stop.wait(delay):
                raise _Stopped
            delay = min(policy.max_delay, delay * policy.factor)
            try:
                self._container = self._open(src)
            except IngestError as exc:
                if not exc.transient and exc.code is not ErrorCode.NOT_FOUND:
                    dec.finish()
                    self._status(StatusKind.FAILED, exc.message, exc.code)
                    return False
                last = exc
                continue
            break
        wall_gap = time.monotonic() - down_since
        self.reconnects += 1
        still_live = is_live(src, self._container)
        dec.attach(self._container, wall_gap=wall_gap, realtime=still_live or self.config.pacing is Pacing.LIVE, live=still_live)
        if pacer is not None:
            pacer.reset()
        self._status(StatusKind.RECONNECTED, "reconnected", attempts=attempt, down_seconds=round(wall_gap, 3))
        self.live = still_live  # an HLS playlist that got its end marker plays out as VOD
        if self._gap is None:  # several reconnects in a row make one gap
            self._gap = _Gap(lost_at, down_since, dec.stats.frames_decoded, dec.stats.audio_seconds)
        return True

    def _check_gap(self) -> None:
        """Publish the pending GAP once media flows again after a reconnect."""
        gap, dec = self._gap, self.decoder
        if gap is None:
            return
        if dec.vstream is not None and dec.stats.frames_decoded == gap.frames:
            return  # video leads: wait for the first new frame
        if dec.vstream is None and dec.stats.audio_seconds == gap.audio:
            return
        self._gap = None
        resumed = dec.first_time_since(gap.frames) if dec.stats.frames_decoded > gap.frames else dec.stats.media_time
        missing = resumed - gap.lost_at
        tracker = dec.tracker if dec.vstream is not None else None
        if tracker is not None and tracker.frame_duration:
            # lost_at is the last frame's start: the next frame was due one frame later. A
            # reconnect that lost nothing (a slow read on a busy host) is no gap, by the rule
            # the frame signals use (services/ingest/signals.py).
            if missing <= tracker.gap_factor * tracker.frame_duration:
                log.info("reconnected without losing media", media_time=round(gap.lost_at, 3))
                return
            missing -= tracker.frame_duration
        self._status(StatusKind.GAP, f"no media from {gap.lost_at:.2f} s to {resumed:.2f} s",
                     start=gap.lost_at, end=resumed, missing_seconds=round(max(0.0, missing), 3),
                     wall_seconds=round(time.monotonic() - gap.down_since, 3))

    def _open(self, src: ResolvedSource) -> av.container.InputContainer:
        """Open in a helper thread so that :meth:`stop` need not wait for a slow connect.

        FFmpeg's open cannot be interrupted from outside before it returns; when the
        pipeline stops meanwhile, the helper closes the container itself once the open
        finishes (at the latest after ``open_timeout``).
        """
        lock = threading.Lock()
        box: dict[str, object] = {}

        def target() -> None:
            try:
                container = open_source(src, self.config.source)
            except BaseException as exc:
                box["error"] = exc
                return
            with lock:
                if box.get("abandoned"):
                    container.close()
                else:
                    box["container"] = container

        opener = threading.Thread(target=target, name="ingest-open", daemon=True)
        opener.start()
        while opener.is_alive():
            opener.join(0.05)
            if self._stop.is_set():
                with lock:
                    box["abandoned"] = True
                    if "container" in box:
                        box["container"].close()  # type: ignore[attr-defined]
                raise _Stopped
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        container = box["container"]
        with self._opened_lock:
            self._opened.append(container)  # type: ignore[arg-type]
        return container  # type: ignore[return-value]

    def _retire_container(self) -> None:
        """The decode thread is done with the current container: close it after its packets' clip jobs."""
        container, self._container = self._container, None
        if container is not None:
            self.decoder.after_packets(lambda: self._close_opened(container))

    def _close_opened(self, container: av.container.InputContainer) -> None:
        with self._opened_lock:
            if container not in self._opened:
                return  # the last thread closed it already
            self._opened.remove(container)
        _close_quietly(container)


def _close_quietly(container: av.container.InputContainer) -> None:
    try:
        container.close()
    except Exception:
        pass


class _Pacer:
    """Holds packets until their media time is due on the wall clock (``live`` pacing)."""

    _JUMP = 5.0  # a media-time jump bigger than this (a gap, a reconnect) re-anchors the clock

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._anchor: float | None = None

    def reset(self) -> None:
        self._anchor = None

    def delay(self, t: float) -> float:
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = now - t
        d = self._anchor + t - now
        if d > self._JUMP:
            self._anchor, d = now - t, 0.0
        return d

    def wait(self, t: float) -> None:
        d = self.delay(t)
        if d > 0 and self._stop.wait(d):
            raise _Stopped


def _describe(src: ResolvedSource, container: av.container.InputContainer, live: bool) -> dict[str, object]:
    info: dict[str, object] = {"kind": src.kind.value, "live": live, "format": container.format.name}
    if container.duration:
        info["duration"] = container.duration / av.time_base
    if container.streams.video:
        v = container.streams.video[0]
        rate = v.average_rate or v.guessed_rate
        info.update(video_codec=v.codec_context.name, width=v.codec_context.width, height=v.codec_context.height,
                    fps=float(rate) if rate else None)
    if container.streams.audio:
        a = container.streams.audio[0]
        info.update(audio_codec=a.codec_context.name, audio_rate=a.codec_context.sample_rate)
    return info
