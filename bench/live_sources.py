"""Live sources for bench_live.py: a 720p30 H.264 + AAC stream cut into HLS segments, served live.

`prepare_segments` encodes a real recording (../shared/data/media/openarena_dm2.mp4, looped when
more seconds are asked) once as a live encoder would: 1280x720, 30 fps, H.264 with a keyframe
every segment (no scene-cut keyframes, so segments are even), AAC 48 kHz stereo; the hls muxer
cuts it into MPEG-TS segments. The result is cached by its inputs, so a rerun does not encode again.

`LiveHlsServer` serves any number of live streams of those segments over HTTP on loopback. Each
stream has its own clock, started when it is added: segment k is published once its last frame's
time has come (`t0 + end_k`), as a live encoder finishes it, and the playlist shows the newest
`window` published segments (a sliding window, no end marker) until the last one is out, when it
gets `#EXT-X-ENDLIST`. The clock is computed from the wall time on each request: nothing runs in
between. `preroll` segments are already out when a stream is added (a channel that was live
before the viewer came). The server records the first segment each stream's reader asked for,
so media time 0 of the reader (ingest's clock starts at its first packet) can be mapped to the
source's capture clock: capture wall time of media time m = t0 + start_of(first segment) + m.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

WIDTH, HEIGHT, FPS, AUDIO_RATE = 1280, 720, 30, 48000
SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media" / "openarena_dm2.mp4"


@dataclass(frozen=True)
class Segment:
    name: str
    start_s: float  # media time of its first frame (0 = the encode's start)
    duration_s: float
    data: bytes

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def _cache_key(source: Path, seconds: float, segment_s: float) -> str:
    st = source.stat()
    raw = json.dumps([str(source.resolve()), st.st_size, st.st_mtime_ns, seconds, segment_s, WIDTH, HEIGHT, FPS, 1])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _encode(source: Path, seconds: float, segment_s: float, out_dir: Path) -> None:
    """Decode `source` (looped) and encode `seconds` of it as a live encoder's HLS output."""
    gop = max(1, round(segment_s * FPS))
    opts = {"hls_time": str(segment_s), "hls_list_size": "0", "hls_segment_filename": str(out_dir / "seg%05d.ts")}
    frames_wanted, samples_wanted = round(seconds * FPS), round(seconds * AUDIO_RATE)
    with av.open(str(out_dir / "full.m3u8"), "w", format="hls", options=opts) as out:
        video = out.add_stream("libx264", rate=FPS, options={
            "preset": "veryfast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0", "crf": "23"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = Fraction(1, FPS)
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.time_base = Fraction(1, AUDIO_RATE)
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE, frame_size=1024)
        frames = samples = 0
        while frames < frames_wanted or samples < samples_wanted:
            with av.open(str(source)) as src:
                streams = [s for s in (src.streams.video[:1] + src.streams.audio[:1])]
                if not src.streams.video:
                    raise SystemExit(f"{source} has no video stream")
                took_any = False
                for frame in src.decode(*streams):
                    took_any = True
                    if isinstance(frame, av.VideoFrame):
                        if frames >= frames_wanted:
                            continue
                        if frame.width != WIDTH or frame.height != HEIGHT or frame.format.name != "yuv420p":
                            frame = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
                        frame.pts, frame.time_base = frames, Fraction(1, FPS)
                        frame.pict_type = av.video.frame.PictureType.NONE
                        for packet in video.encode(frame):
                            out.mux(packet)
                        frames += 1
                    else:
                        if samples >= samples_wanted:
                            continue
                        frame.pts = None
                        for chunk in resampler.resample(frame):
                            if samples >= samples_wanted:
                                break
                            chunk.pts, chunk.time_base = samples, Fraction(1, AUDIO_RATE)
                            samples += chunk.samples
                            for packet in audio.encode(chunk):
                                out.mux(packet)
                    if frames >= frames_wanted and samples >= samples_wanted:
                        break
                if not took_any:
                    raise SystemExit(f"{source} gave no frames")
                if not src.streams.audio:
                    samples = samples_wanted  # silent source: video only
        for packet in video.encode(None):
            out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)


def _read_playlist(out_dir: Path) -> list[Segment]:
    text = (out_dir / "full.m3u8").read_text()
    pairs = re.findall(r"#EXTINF:([0-9.]+),\s*\n(\S+)", text)
    segments, start = [], 0.0
    for duration, name in pairs:
        data = (out_dir / Path(name).name).read_bytes()
        segments.append(Segment(Path(name).name, start, float(duration), data))
        start += float(duration)
    if not segments:
        raise SystemExit(f"no segments in {out_dir / 'full.m3u8'}")
    return segments


def prepare_segments(cache_dir: Path, seconds: float, segment_s: float = 1.0, source: Path = SHARED_MEDIA) -> list[Segment]:
    """`seconds` of `source` as 720p30 H.264 + AAC HLS segments of `segment_s` (encoded once, cached)."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} is absent: the live benchmark plays that real recording (../shared/data/media)")
    out_dir = cache_dir / f"live-{_cache_key(source, seconds, segment_s)}"
    if not (out_dir / "done").is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*"):
            old.unlink()
        _encode(source, seconds, segment_s, out_dir)
        (out_dir / "done").write_text("ok\n")
    return _read_playlist(out_dir)


@dataclass
class LiveStream:
    """One live channel: its clock and what its reader asked for."""

    name: str
    segments: list[Segment]
    t0: float  # wall time (time.time()) of the encode's media time 0
    window: int = 6
    first_requested: int | None = None
    requested_at: dict[int, float] = field(default_factory=dict)  # segment index -> first request's wall time

    def published(self, now: float) -> int:
        """How many segments are out at wall time `now`."""
        return sum(1 for s in self.segments if self.t0 + s.end_s <= now)

    def playlist(self, now: float) -> str:
        count = self.published(now)
        first = max(0, count - self.window)
        shown = self.segments[first:count]
        target = max(1, round(max(s.duration_s for s in self.segments) + 0.4999))
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for k, s in enumerate(shown, start=first):
            lines += [f"#EXTINF:{s.duration_s:.6f},", f"{k}.ts"]
        if count == len(self.segments):
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def capture_time(self, media_s: float) -> float:
        """Wall time at which the source captured the reader's media time `media_s`."""
        first = self.first_requested or 0
        return self.t0 + self.segments[first].start_s + media_s

    def published_at(self, media_s: float) -> float:
        """Wall time at which the segment holding the reader's media time `media_s` came out."""
        source_s = self.segments[self.first_requested or 0].start_s + media_s
        for s in self.segments:
            if source_s < s.end_s:
                return self.t0 + s.end_s
        return self.t0 + self.segments[-1].end_s

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        now = time.time()
        match = re.fullmatch(r"/([a-z0-9_-]+)/(live\.m3u8|(\d+)\.ts)", self.path.split("?", 1)[0])
        stream = self.server.owner.streams.get(match.group(1)) if match else None
        if stream is None:
            return self._send(404, b"no such stream\n", "text/plain")
        if match.group(3) is None:
            return self._send(200, stream.playlist(now).encode(), "application/vnd.apple.mpegurl")
        index = int(match.group(3))
        if index >= stream.published(now):
            return self._send(404, b"not published yet\n", "text/plain")
        with self.server.owner.lock:
            if stream.first_requested is None:
                stream.first_requested = index
            stream.requested_at.setdefault(index, now)
        self._send(200, stream.segments[index].data, "video/mp2t")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "LiveHlsServer"


class LiveHlsServer:
    """Live HLS channels over HTTP on 127.0.0.1 (see the module docstring); a context manager."""

    def __init__(self, segments: list[Segment], window: int = 6, preroll: int = 3) -> None:
        self.segments, self.window, self.preroll = segments, window, preroll
        self.streams: dict[str, LiveStream] = {}
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-hls", daemon=True)

    def add(self, name: str, now: float | None = None) -> LiveStream:
        """A new live channel at `/<name>/live.m3u8`, `preroll` segments already out."""
        now = time.time() if now is None else now
        ahead = self.segments[min(self.preroll, len(self.segments)) - 1].end_s if self.preroll else 0.0
        stream = LiveStream(name, self.segments, t0=now - ahead, window=self.window)
        self.streams[name] = stream
        return stream

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/live.m3u8"

    def __enter__(self) -> "LiveHlsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
