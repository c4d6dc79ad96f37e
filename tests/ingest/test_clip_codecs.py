"""Clips browsers play: an HEVC source gives an H.264 + AAC MP4 clip (the clip alone re-encoded),
an H.264 source's clip is a stream copy (its packets are the source's), and clip ids are random."""

from __future__ import annotations

import asyncio
import re
from fractions import Fraction

import av
import numpy as np
import pytest

from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import channel

DONE = (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED)


def _make(path, codec: str, seconds: float = 8.0, fps: int = 25, gop: int = 25):
    """A moving gradient with a tone, `codec` video (libx265 / libx264) and AAC audio."""
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.options = {"x265-params": f"log-level=error:keyint={gop}"} if codec == "libx265" else {"g": str(gop)}
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        x = np.linspace(0, 255, 320, dtype=np.float32)
        for i in range(int(seconds * fps)):
            img = np.broadcast_to(((x + 8 * i) % 256).astype(np.uint8)[None, :, None], (240, 320, 3)).copy()
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = 0
        for _ in range(int(seconds * 48000 / 1024)):
            tone = np.sin(2 * np.pi * 440 * (t + np.arange(1024)) / 48000).astype(np.float32) * 0.2
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, t, Fraction(1, 48000)
            t += 1024
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


async def _clip(nats_server, tmp_path, source, start_s: float, end_s: float) -> tuple[ingest_pb2.ExportClipRequest, bytes]:
    ingest = IngestService(IngestSettings(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, data_dir=tmp_path / "var"))
    async with ingest.serving(), channel(ingest.address) as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        await stub.StartIngest(ingest_pb2.StartIngestRequest(stream_id="s1", source=str(source), pacing=common_pb2.PACING_VOD))
        while (status := await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="s1"))).state not in DONE:
            await asyncio.sleep(0.1)
        assert status.state == common_pb2.STREAM_STATE_ENDED, status.last_error
        clip = await stub.ExportClip(ingest_pb2.ExportClipRequest(stream_id="s1", start_s=start_s, end_s=end_s, clip_id="highlight-0"))
        data = b"".join([c.data async for c in stub.ReadClip(ingest_pb2.ReadClipRequest(stream_id="s1", clip_id=clip.clip_id))])
    return clip, data


@pytest.mark.skipif("libx265" not in av.codecs_available, reason="this FFmpeg build has no libx265 to make an HEVC source")
async def test_an_hevc_source_gives_an_h264_clip(nats_server, bus, tmp_path):
    source = _make(tmp_path / "hevc.mp4", "libx265")
    with av.open(str(source)) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
    clip, data = await _clip(nats_server, tmp_path, source, 2.5, 6.0)
    assert re.fullmatch(r"[0-9a-f]{32}", clip.clip_id)
    out = tmp_path / "clip.mp4"
    out.write_bytes(data)
    with av.open(str(out)) as c:
        assert c.format.name.startswith("mov,mp4")
        assert c.streams.video[0].codec_context.name == "h264", "browsers other than Safari play H.264 only"
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = list(c.decode(video=0))
    assert clip.start_s == pytest.approx(2.0, abs=0.01), "the clip starts at the keyframe at or before 2.5 s"
    assert len(frames) == pytest.approx((6.0 - clip.start_s) * 25, abs=3), "video up to the requested end"
    assert frames[0].key_frame


async def test_an_h264_source_is_stream_copied(nats_server, bus, tmp_path):
    source = _make(tmp_path / "avc.mp4", "libx264")
    clip, data = await _clip(nats_server, tmp_path, source, 2.5, 6.0)
    out = tmp_path / "clip.mp4"
    out.write_bytes(data)
    with av.open(str(source)) as c:
        originals = {bytes(p) for p in c.demux(video=0) if p.size}
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        copied = [bytes(p) for p in c.demux(video=0) if p.size]
    assert len(copied) == pytest.approx((6.0 - clip.start_s) * 25, abs=3)
    assert all(p in originals for p in copied), "every video packet of the clip is one of the source's: no re-encoding"
