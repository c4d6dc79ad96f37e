"""Sampled-frame conversion: the fast two-step path (shrink YUV, then convert) matches swscale's direct path."""

from __future__ import annotations

import av
import numpy as np
import pytest

from services.ingest.sampling import ConsumerSpec, Sampler
from streamsight.app.synth import make_media


@pytest.fixture(scope="module")
def hd_frames(tmp_path_factory) -> list[av.VideoFrame]:
    path = tmp_path_factory.mktemp("hd") / "hd.mp4"
    make_media(path, duration=1.0, width=1920, height=1080, fps=10, segments=[(0, 1, "action")], audio="none")
    with av.open(str(path)) as c:
        return list(c.decode(video=0))[:4]


@pytest.mark.parametrize("spec, limit", [
    (ConsumerSpec(fps=2.0, format="rgb24", max_width=1280, max_height=720), 4.0),
    (ConsumerSpec(fps=1.0, format="rgb24", width=224, height=224), 10.0),
])
def test_two_step_conversion_stays_close_to_the_direct_one(hd_frames, spec, limit) -> None:
    sampler = Sampler("x", spec)
    for frame in hd_frames:
        fast = sampler.convert(frame)
        w, h = spec.output_size(frame.width, frame.height)
        direct = frame.reformat(w, h, spec.format, interpolation="AREA").to_ndarray()
        assert sampler._two_step
        assert fast.shape == direct.shape == (h, w, 3)
        assert np.abs(fast.astype(int) - direct.astype(int)).mean() < limit
