"""Clip export by stream copy from the rolling buffer, and ingest of the real media files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from services.ingest.clips import ClipBufferConfig
from services.ingest.decode import DecodeConfig
from services.ingest.errors import ErrorCode, IngestError
from services.ingest.items import FrameSignals, SampledFrame, StatusEvent, StatusKind, WindowRecord
from services.ingest.pipeline import IngestConfig, IngestPipeline


async def run(source: str, config: IngestConfig) -> tuple[IngestPipeline, list]:
    pipeline = IngestPipeline(source, config)
    items = [item async for item in pipeline.items()]
    return pipeline, items


async def test_clip_is_stream_copied_from_the_keyframe_before_t0(sample, tmp_path: Path) -> None:
    buf = ClipBufferConfig(directory=tmp_path / "buffer", seconds=300, segment_seconds=4.0)
    pipeline, _ = await run(str(sample.path), IngestConfig(decode=DecodeConfig(clip_buffer=buf)))
    clip_buffer = pipeline.clip_buffer
    assert clip_buffer is not None and len(list(buf.directory.glob("seg_*.mkv"))) >= 4
    clip = clip_buffer.export(7.3, 12.0, tmp_path / "clip.mp4")
    assert clip.start == pytest.approx(6.0)  # keyframes every 2 s: the one at or before 7.3
    assert 12.0 <= clip.end <= 12.0 + 4 / sample.fps
    assert clip.duration == pytest.approx(clip.end - clip.start)
    with av.open(str(clip.path)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and c.streams.audio
        frames = list(c.decode(v))
        assert frames[0].key_frame and frames[0].time == pytest.approx(0.0, abs=1e-3)
        assert len(frames) >= round((12.0 - 6.0) * sample.fps)
        assert c.duration / av.time_base == pytest.approx(clip.duration, abs=0.15)
    # Stream copy: the clip's packets are byte-identical to the source's packets.
    with av.open(str(sample.path)) as src, av.open(str(clip.path)) as c:
        want = [bytes(p) for p in src.demux(video=0) if p.size and 6.0 - 1e-3 <= p.pts * p.time_base < 6.5]
        got = [bytes(p) for p in c.demux(video=0) if p.size][: len(want)]
        assert sorted(got) == sorted(want)


async def test_clip_requests_outside_the_buffer_are_refused(sample, tmp_path: Path) -> None:
    buf = ClipBufferConfig(directory=tmp_path / "buffer", seconds=6.0, segment_seconds=2.0)
    pipeline, _ = await run(str(sample.path), IngestConfig(decode=DecodeConfig(clip_buffer=buf)))
    first, newest = pipeline.clip_buffer.buffered_range()
    assert first >= 10.0 and newest == pytest.approx(sample.duration - 1 / sample.fps, abs=0.05)
    assert len(list(buf.directory.glob("seg_*.mkv"))) <= 5  # old segments were deleted
    with pytest.raises(IngestError) as err:
        pipeline.clip_buffer.export(1.0, 5.0, tmp_path / "old.mp4")
    assert err.value.code is ErrorCode.CLIP_OUT_OF_RANGE and err.value.code.grpc_status == "OUT_OF_RANGE"
    with pytest.raises(IngestError):
        pipeline.clip_buffer.export(8.0, 7.0, tmp_path / "backwards.mp4")


async def test_big_buck_bunny(shared_data: Path, tmp_path: Path) -> None:
    buf = ClipBufferConfig(directory=tmp_path / "buffer")
    pipeline, items = await run(str(shared_data / "media" / "bigbuckbunny.mp4"),
                                IngestConfig(decode=DecodeConfig(clip_buffer=buf)))
    status = [i for i in items if isinstance(i, StatusEvent)]
    assert status[0].details["width"] == 1280 and status[0].details["audio_codec"] == "aac"
    assert status[-1].kind is StatusKind.ENDED and status[-1].code is None
    signals = [s for i in items if isinstance(i, FrameSignals) for s in i.signals]
    fps = status[0].details["fps"]
    assert len(signals) == pytest.approx(5.3 * fps, abs=3)
    assert not any(s.is_corrupt or s.missing_frames for s in signals)
    glitch = [i for i in items if isinstance(i, SampledFrame) and i.consumer == "glitch"]
    assert glitch[0].image.shape == (720, 1280, 3)
    assert pipeline.stats.audio_seconds == pytest.approx(5.3, abs=0.1)
    clip = pipeline.clip_buffer.export(1.0, 3.0, tmp_path / "bbb.mp4")
    with av.open(str(clip.path)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 2 * fps


async def test_vtest_avi_msmpeg4_without_audio(shared_data: Path, tmp_path: Path) -> None:
    buf = ClipBufferConfig(directory=tmp_path / "buffer")
    pipeline, items = await run(str(shared_data / "media" / "vtest.avi"),
                                IngestConfig(decode=DecodeConfig(clip_buffer=buf)))
    windows = [i for i in items if isinstance(i, WindowRecord)]
    assert [w.index for w in windows] == list(range(8))
    assert [w.frames_decoded for w in windows[:7]] == [100] * 7  # 10 fps
    assert all(w.audio_seconds == 0 for w in windows) and windows[-1].complete is False
    flow = [i for i in items if isinstance(i, SampledFrame) and i.consumer == "flow"]
    assert flow[0].image.shape == (240, 320)
    np.testing.assert_allclose([f.media_time for f in flow[:10]], np.arange(10) / 5, atol=1e-3)
    with pytest.raises(IngestError) as err:  # MP4 cannot hold MS-MPEG4; MKV can
        pipeline.clip_buffer.export(10.0, 15.0, tmp_path / "people.mp4")
    assert err.value.code is ErrorCode.UNSUPPORTED_CODEC and ".mkv" in err.value.message
    clip = pipeline.clip_buffer.export(10.0, 15.0, tmp_path / "people.mkv")
    with av.open(str(clip.path)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 50
