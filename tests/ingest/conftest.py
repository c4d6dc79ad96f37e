"""Fixtures for the ingest tests: generated media and a live HLS stream on a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import av
import pytest

from streamsight.app.synth import SynthInfo, make_media

# Planted motion of the shared 20 s sample: still, pan, local action, still.
SEGMENTS = [(0.0, 5.0, "still"), (5.0, 11.0, "pan"), (11.0, 16.0, "action"), (16.0, 20.0, "still")]


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SynthInfo:
    """20 s, 480x270 @ 30 fps H.264 + AAC MP4 with known motion and a 440 Hz tone."""
    path = tmp_path_factory.mktemp("media") / "sample.mp4"
    return make_media(path, duration=20.0, width=480, height=272, fps=30, segments=SEGMENTS, keyframe_interval=2.0)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class LiveHls:
    """Publishes pre-cut 1 s TS segments into a served folder in real time, like a live encoder.

    ``stall_at``/``stall_seconds``: stop publishing before that segment for that long; the
    segments that "happened" meanwhile are lost (skipped), as on a real live stream.
    Each segment file is written in two halves under a temporary name and renamed, so
    the server sees segments appear while they are being written.
    """

    def __init__(self, root: Path, segments: list[Path], window: int = 4) -> None:
        self.root, self.segments, self.window = root, segments, window
        self.published: list[tuple[int, str]] = []  # (media sequence number, file name)
        self.skipped: list[int] = []
        self.done = threading.Event()
        self.playlist = root / "live.m3u8"
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.m3u8"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._stop = threading.Event()

    def _write_playlist(self, ended: bool = False) -> None:
        shown = self.published[-self.window :]
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{shown[0][0]}"]
        for _, name in shown:
            lines += ["#EXTINF:1.000000,", name]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        tmp = self.root / "live.m3u8.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.playlist)

    def _publish(self, index: int) -> None:
        data = self.segments[index].read_bytes()
        seq = len(self.published)  # media sequence numbers never skip, whatever content was lost
        name = f"live{seq:03d}.ts"
        part = self.root / (name + ".part")
        with open(part, "wb") as fh:  # written while the stream is being served
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(0.05)
            fh.write(data[len(data) // 2 :])
        part.replace(self.root / name)
        self.published.append((seq, name))
        self._write_playlist()

    def run(self, *, preroll: int = 2, stall_at: int | None = None, stall_seconds: float = 0.0,
            end: bool = True, period: float = 1.0, limit: int | None = None) -> None:
        """Publish in a thread: ``preroll`` segments at once, then one per ``period`` seconds."""
        def worker() -> None:
            seq, count = 0, min(len(self.segments), limit or len(self.segments))
            while seq < count and not self._stop.is_set():
                if stall_at is not None and seq == stall_at:
                    if self._stop.wait(stall_seconds):
                        return
                    lost = int(round(stall_seconds / period))
                    self.skipped = list(range(seq, min(seq + lost, len(self.segments))))
                    seq += lost
                    continue
                self._publish(seq)
                seq += 1
                if seq > preroll and self._stop.wait(period):
                    return
            if end:
                self._write_playlist(ended=True)
            self.done.set()

        threading.Thread(target=worker, daemon=True).start()
        deadline = time.monotonic() + 5
        while len(self.published) < min(preroll, limit or len(self.segments)) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def cut_hls_segments(src: Path, out_dir: Path, seconds: float = 1.0) -> list[Path]:
    """Cut a TS file into HLS segments with FFmpeg's hls muxer (stream copy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = {"hls_time": str(seconds), "hls_list_size": "0", "hls_segment_filename": str(out_dir / "seg%03d.ts")}
    with av.open(str(src)) as inp, av.open(str(out_dir / "full.m3u8"), "w", format="hls", options=opts) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    names = re.findall(r"^(seg\d+\.ts)$", (out_dir / "full.m3u8").read_text(), flags=re.M)
    return [out_dir / n for n in names]


@pytest.fixture(scope="session")
def hls_segments(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """16 one-second TS segments (320x180 @ 15 fps H.264 + AAC) of a panning scene."""
    root = tmp_path_factory.mktemp("hls_src")
    info = make_media(root / "src.ts", duration=16.0, width=320, height=180, fps=15, keyframe_interval=1.0,
                      segments=[(0.0, 16.0, "pan")])
    return cut_hls_segments(info.path, root / "segments")


@pytest.fixture
def live_hls(tmp_path: Path, hls_segments: list[Path]) -> Iterator[LiveHls]:
    root = tmp_path / "www"
    root.mkdir()
    live = LiveHls(root, hls_segments)
    yield live
    live.close()
    shutil.rmtree(root, ignore_errors=True)
