"""A live source's window closes at the live edge: with the last packets of the segment that ends
on the window's end, not half a second of media later (which, live, comes with the next HLS
segment, a second or more of wall time), and with the same counts and audio a file gets."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from services.ingest.decode import DecodeConfig, StreamDecoder
from services.ingest.items import AudioChunk, WindowRecord

FPS, RATE, SECONDS = 30, 48000, 21


@pytest.fixture(scope="module")
def playlist(tmp_path_factory) -> Path:
    """21 s of 320x180 30 fps H.264 (no B-frames, a keyframe a second) + AAC tone, as 1 s HLS
    segments: what a live encoder publishes."""
    folder = tmp_path_factory.mktemp("hls")
    opts = {"hls_time": "1", "hls_list_size": "0", "hls_segment_filename": str(folder / "seg%03d.ts")}
    with av.open(str(folder / "live.m3u8"), "w", format="hls", options=opts) as out:
        video = out.add_stream("libx264", rate=FPS, options={"g": str(FPS), "keyint_min": str(FPS), "sc_threshold": "0", "bf": "0", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        audio = out.add_stream("aac", rate=RATE, layout="mono")
        t = np.arange(1024) / RATE
        samples = 0
        for n in range(SECONDS * FPS):
            image = np.full((180, 320, 3), (n * 7) % 256, np.uint8)
            image[:, (n * 5) % 320] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            for packet in video.encode(frame):
                out.mux(packet)
            while samples < (n + 1) * RATE // FPS:
                tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * (t + samples / RATE)))[None].astype(np.float32), format="flt", layout="mono")
                tone.sample_rate, tone.pts, tone.time_base = RATE, samples, Fraction(1, RATE)
                for packet in audio.encode(tone):
                    out.mux(packet)
                samples += 1024
        for stream in (video, audio):
            for packet in stream.encode():
                out.mux(packet)
    return folder / "live.m3u8"


def _decode(path: Path, live: bool) -> tuple[list[tuple[WindowRecord, float]], list[AudioChunk]]:
    """Every window record with the media time of the packet that let it out, and every audio chunk."""
    decoder = StreamDecoder(DecodeConfig())
    records, chunks = [], []
    with av.open(str(path)) as container:
        decoder.attach(container, realtime=True, live=live)
        for packet in container.demux():
            decoder.process(packet)
            at = float(packet.pts * packet.time_base) - decoder.origin if packet.pts is not None else None
            for entry in decoder.take():
                if isinstance(entry, WindowRecord):
                    records.append((entry, at))
                elif isinstance(entry, AudioChunk):
                    chunks.append(entry)
    decoder.finish()
    for entry in decoder.take():
        if isinstance(entry, WindowRecord):
            records.append((entry, None))
        elif isinstance(entry, AudioChunk):
            chunks.append(entry)
    return records, chunks


def test_a_live_window_closes_with_its_own_segment_and_holds_what_a_files_does(playlist: Path) -> None:
    live, live_chunks = _decode(playlist, live=True)
    file, file_chunks = _decode(playlist, live=False)
    complete = [(r, at) for r, at in live if r.end <= 20.0]
    assert [r.index for r, _ in complete] == [0, 1], [r.index for r, _ in live]
    for record, at in complete:
        # The packet that closed it is the window's own segment's: before the window's end.
        assert at is not None and at < record.end, (record.index, at)
    for record, at in file[:2]:  # a file's: half a second later (the next segment), or at the end
        assert at is None or at >= record.end + 0.5, (record.index, at)
    for (a, _), (b, _) in zip(complete, file):
        assert (a.index, a.frames_decoded, a.video_packets) == (b.index, b.frames_decoded, b.video_packets)
        assert a.frames_decoded == 10 * FPS
        assert a.audio_seconds == pytest.approx(b.audio_seconds, abs=1e-6)
    before = [c for c in live_chunks if c.media_time < 20.0]
    same = [c for c in file_chunks if c.media_time < 20.0]
    assert [round(c.media_time, 6) for c in before] == [round(c.media_time, 6) for c in same]
    for a, b in zip(before, same):
        np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)
