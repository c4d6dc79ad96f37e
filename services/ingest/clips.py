"""Rolling on-disk buffer of the original compressed packets, and clip export by stream copy.

Packets are remuxed (never re-encoded) into Matroska segment files of about
``segment_seconds`` each, with timestamps rewritten to media time, so a file's PTS in
seconds *is* the stream's media time even across reconnects. Segments older than
``seconds`` are deleted. A clip ``[t0, t1]`` is cut from the segments into an MP4 by
stream copy, starting at the last video keyframe at or before ``t0`` (so it decodes
from its first frame) and shifted to start at 0.

Thread model: the ingest thread calls :meth:`ClipBuffer.write`; :meth:`ClipBuffer.export`
may run in any other thread. A lock guards the segment list; segments used by a
running export are pinned so retention cannot delete them mid-read.

Memory: the input streams given as templates keep their decoders alive (an H.264 decoder
holds its frame threads and picture pool, about 25 MB at 720p), so :meth:`ClipBuffer.close`
lets go of them; a closed buffer keeps only its segment list and stays readable.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from pathlib import Path

import av
import structlog

from .errors import ErrorCode, IngestError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ClipBufferConfig:
    """Where segments go, how much media to keep (seconds) and how long a segment is."""

    directory: Path
    seconds: float = 300.0
    segment_seconds: float = 10.0


@dataclass(frozen=True)
class Clip:
    """An exported clip: ``start``/``end`` are the media times actually covered."""

    path: Path
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class _Segment:
    number: int
    path: Path
    start: float
    end: float
    keyframes: list[float] = field(default_factory=list)
    closed: bool = False


class ClipBuffer:
    """The clip buffer of one stream; ``templates`` are the input streams to copy (video first)."""

    def __init__(self, config: ClipBufferConfig, templates: list[av.stream.Stream]) -> None:
        self.config = config
        self.config.directory.mkdir(parents=True, exist_ok=True)
        self._templates = {s.type: s for s in templates}
        self._kinds = frozenset(self._templates)  # what the segments hold, kept after close()
        self.video_codec = _video_codec(templates)  # kept after close(): clips decide on it
        self._closed = False
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._out: av.container.OutputContainer | None = None
        self._out_streams: dict[str, av.stream.Stream] = {}
        self._pinned: dict[int, int] = {}
        self._counter = 0
        self._newest = 0.0
        self.skipped_packets = 0

    # -- writer side (ingest thread) ------------------------------------------------

    def write(self, packet: av.Packet, kind: str, pts_t: float, dts_t: float | None, key: bool) -> None:
        """Append one packet whose PTS is ``pts_t`` media seconds (the packet is consumed)."""
        if kind not in self._templates or pts_t < 0:
            self.skipped_packets += 1
            return
        tb = float(packet.time_base)  # float maths: Fraction arithmetic per packet is slow
        with self._lock:
            if self._closed:  # a packet the stream's end overtook
                self.skipped_packets += 1
                return
            seg = self._segments[-1] if self._out is not None else None
            starts_segment = key if "video" in self._templates else True
            if seg is None or (kind == "video" or "video" not in self._templates) and starts_segment and (
                    pts_t - seg.start >= self.config.segment_seconds):
                seg = self._roll(pts_t)
            packet.pts = int(round(pts_t / tb))
            packet.dts = int(round(dts_t / tb)) if dts_t is not None else packet.pts
            packet.stream = self._out_streams[kind]
            try:
                self._out.mux(packet)  # type: ignore[union-attr]
            except av.error.FFmpegError as exc:  # e.g. non-monotonic DTS after a glitch: skip it
                self.skipped_packets += 1
                log.debug("clip buffer skipped a packet", error=str(exc))
                return
            if kind == "video" and key:
                seg.keyframes.append(pts_t)
            seg.end = max(seg.end, pts_t)
            self._newest = max(self._newest, pts_t)

    def set_templates(self, templates: list[av.stream.Stream]) -> None:
        """Use new input streams (after a reconnect); the next packet starts a new segment."""
        with self._lock:
            self._close_open()
            if not self._closed:
                self._templates = {s.type: s for s in templates}
                self._kinds = frozenset(self._templates)
                self.video_codec = _video_codec(templates)

    def close(self) -> None:
        """The stream ended: finish the open segment and let go of the input streams.

        The buffer stays readable; packets written after this are skipped.
        """
        with self._lock:
            self._close_open()
            self._closed = True
            self._templates = {}

    def remove(self) -> None:
        """Close and delete every segment file."""
        with self._lock:
            self._close_open()
            self._closed = True
            self._templates = {}
            for seg in self._segments:
                seg.path.unlink(missing_ok=True)
            self._segments.clear()

    def _roll(self, start: float) -> _Segment:
        self._close_open()
        path = self.config.directory / f"seg_{self._counter:06d}.mkv"
        self._counter += 1
        self._out = av.open(str(path), mode="w", format="matroska")
        self._out_streams = {kind: self._out.add_stream_from_template(tpl) for kind, tpl in self._templates.items()}
        seg = _Segment(number=self._counter - 1, path=path, start=start, end=start)
        self._segments.append(seg)
        self._prune()
        return seg

    def _close_open(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except av.error.FFmpegError as exc:
                log.warning("closing a clip segment failed", error=str(exc))
            self._out = None
            self._out_streams = {}
            if self._segments:
                self._segments[-1].closed = True

    def _prune(self) -> None:
        horizon = self._newest - self.config.seconds
        while len(self._segments) > 1 and self._segments[0].closed and self._segments[1].start <= horizon:
            old = self._segments[0]
            if self._pinned.get(old.number):
                break
            old.path.unlink(missing_ok=True)
            self._segments.pop(0)

    # -- kept across a restart (clipindex.py) ---------------------------------------

    def index(self) -> dict:
        """What `restored` needs to read this buffer's segments again: kinds, codec, segments (file names)."""
        with self._lock:
            return {
                "kinds": sorted(self._kinds), "video_codec": self.video_codec, "newest": self._newest,
                "segments": [{"number": s.number, "file": s.path.name, "start": s.start, "end": s.end, "keyframes": list(s.keyframes)}
                             for s in self._segments],
            }

    @classmethod
    def restored(cls, config: ClipBufferConfig, index: dict) -> "ClipBuffer":
        """A closed, readable buffer over the segments `index` lists (the files must still be in ``config.directory``)."""
        buffer = cls(config, [])
        buffer._closed = True
        buffer._kinds = frozenset(str(k) for k in index["kinds"])
        buffer.video_codec = index.get("video_codec")
        buffer._newest = float(index["newest"])
        for raw in index["segments"]:
            path = config.directory / str(raw["file"])
            if path.parent != config.directory or not path.is_file():
                raise ValueError(f"segment {raw['file']!r} is not in {config.directory}")
            buffer._segments.append(_Segment(int(raw["number"]), path, float(raw["start"]), float(raw["end"]),
                                             [float(k) for k in raw["keyframes"]], closed=True))
        buffer._counter = max((s.number for s in buffer._segments), default=-1) + 1
        return buffer

    # -- reader side (any thread) ---------------------------------------------------

    def buffered_range(self) -> tuple[float, float] | None:
        """(first keyframe, newest packet) media times available for clips, or None."""
        with self._lock:
            keys = [k for s in self._segments for k in s.keyframes]
            if not self._segments:
                return None
            first = keys[0] if keys else self._segments[0].start
            return first, self._newest

    def export(self, t0: float, t1: float, dest: str | Path) -> Clip:
        """Write the clip ``[t0, t1]`` to ``dest`` by stream copy and return what it covers.

        ``dest`` is MP4 unless its suffix is ``.mkv`` (for codecs MP4 cannot hold).

        The start moves back to the last keyframe at or before ``t0``; a range that
        begins before the oldest buffered keyframe is clamped to it, one that ends after
        the newest packet is clamped to it.
        """
        if not t1 > t0:
            raise IngestError(ErrorCode.CLIP_OUT_OF_RANGE, f"clip end {t1} must be after its start {t0}")
        dest = Path(dest)
        with self._lock:
            has_video = "video" in self._kinds
            keys = [(k, s) for s in self._segments for k in s.keyframes] if has_video else [
                (s.start, s) for s in self._segments]
            if not keys or t0 >= self._newest or t1 <= keys[0][0]:
                held = f"{keys[0][0]:.2f}-{self._newest:.2f} s" if keys else "nothing yet"
                raise IngestError(ErrorCode.CLIP_OUT_OF_RANGE,
                                  f"clip {t0:.2f}-{t1:.2f} s is not in the clip buffer (it holds {held})")
            i = max(0, bisect.bisect_right([k for k, _ in keys], t0 + 1e-6) - 1)
            start, first_seg = keys[i]
            segs = [s for s in self._segments if s.number >= first_seg.number and s.start < t1]
            if segs and not segs[-1].closed:
                self._close_open()  # finish the file being written; the next packet opens a new one
            for s in segs:
                self._pinned[s.number] = self._pinned.get(s.number, 0) + 1
        try:
            end = self._copy(segs, start, t1, dest, has_video)
        finally:
            with self._lock:
                for s in segs:
                    self._pinned[s.number] -= 1
        return Clip(path=dest, start=start, end=end)

    def _copy(self, segs: list[_Segment], start: float, t1: float, dest: Path, has_video: bool) -> float:
        dest.parent.mkdir(parents=True, exist_ok=True)
        end = start
        started = not has_video
        video_done = False
        fmt = "matroska" if dest.suffix.lower() == ".mkv" else "mp4"
        with av.open(str(dest), mode="w", format=fmt) as out:
            out_streams: dict[str, av.stream.Stream] = {}
            chosen: list[tuple[str, av.Packet]] = []
            for seg in segs:
                with av.open(str(seg.path)) as src:
                    streams = [s for s in src.streams if s.type in ("video", "audio")]
                    if not out_streams:
                        try:
                            out_streams = {s.type: out.add_stream_from_template(s) for s in streams}
                        except (ValueError, av.error.FFmpegError) as exc:
                            raise IngestError(ErrorCode.UNSUPPORTED_CODEC,
                                              f"this codec cannot be stored in an MP4 clip ({exc}); ask for a .mkv clip") from exc
                    for packet in src.demux(streams):
                        if packet.pts is None or packet.size == 0:
                            continue
                        kind = packet.stream.type
                        tb = packet.time_base
                        pts_t = float(packet.pts * tb)
                        if kind == "video":
                            if not started:
                                if not (packet.is_keyframe and abs(pts_t - start) < 1e-3):
                                    continue
                                started = True
                            dts_t = float(packet.dts * tb) if packet.dts is not None else pts_t
                            if video_done or dts_t >= t1:
                                video_done = True
                                continue
                        elif not (started and start <= pts_t < t1):
                            continue
                        shift = int(round(start / tb))
                        packet.pts -= shift
                        if packet.dts is not None:
                            packet.dts -= shift
                        dur = float(packet.duration * tb) if packet.duration else 0.0
                        end = max(end, pts_t + dur)
                        chosen.append((kind, packet))
            _rebuild_dts([p for kind, p in chosen if kind == "video"])
            for kind, packet in chosen:
                packet.stream = out_streams[kind]
                out.mux(packet)
        return end


def _video_codec(templates: list[av.stream.Stream]) -> str | None:
    video = [s for s in templates if s.type == "video"]
    return video[0].codec_context.name if video else None


def _rebuild_dts(packets: list[av.Packet]) -> None:
    """Give video packets (in decode order) the DTS an MP4 needs.

    Matroska keeps no DTS: with B-frames the demuxer leaves it unset or equal to the PTS, which
    the MP4 muxer refuses. The decode timestamps are the presentation timestamps in sorted
    order, moved back by the reorder delay (the smallest shift that keeps every DTS at or below
    its packet's PTS), so they increase strictly and never pass a PTS.
    """
    if not packets:
        return
    order = sorted(p.pts for p in packets)
    delay = max(0, max(sorted_pts - p.pts for sorted_pts, p in zip(order, packets)))
    for sorted_pts, packet in zip(order, packets):
        packet.dts = sorted_pts - delay
