"""Clips of B-frame H.264 cut from any part of the buffer, the last segment included, mux into MP4."""

from __future__ import annotations

import av
import pytest

from services.ingest.clips import ClipBufferConfig
from services.ingest.decode import DecodeConfig
from services.ingest.pipeline import IngestConfig, IngestPipeline
from streamsight.app.synth import make_media


@pytest.mark.parametrize("t0, t1", [(10.0, 22.0), (7.0, 20.0), (20.0, 30.0)])
async def test_clip_spanning_segments_has_valid_timestamps(tmp_path, t0, t1):
    source = make_media(tmp_path / "b.mp4", duration=30.0, bframes=2, keyframe_interval=2.0, audio="aac")
    pipeline = IngestPipeline(str(source.path), IngestConfig(decode=DecodeConfig(clip_buffer=ClipBufferConfig(directory=tmp_path / "buf"))))
    async for _ in pipeline.items():
        pass
    clip = pipeline.clip_buffer.export(t0, t1, tmp_path / "clip.mp4")
    with av.open(str(clip.path)) as container:
        frames = list(container.decode(video=0))
    assert frames[0].key_frame
    expected = (min(t1, 30.0) - clip.start) * 30
    assert len(frames) == pytest.approx(expected, abs=3)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts), "frames come out in presentation order"
