"""Sampled-frame conversion: the fast two-step path (shrink YUV, then convert) matches swscale's
direct path; a consumer with pass_yuv420p gets a yuv420p source's planes, which convert to the
RGB it would have got, bit for bit, and RGB from any other source."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

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


MEDIA = Path(__file__).resolve().parents[3] / "shared" / "data" / "media"
GAME = MEDIA / "openarena_dm2.mp4"
GLITCH = ConsumerSpec(fps=2.0, format="rgb24", max_width=1280, max_height=720)
PASS = ConsumerSpec(fps=2.0, format="rgb24", max_width=1280, max_height=720, pass_yuv420p=True)


def game_frames(n: int = 6) -> list[av.VideoFrame]:
    with av.open(str(GAME)) as c:
        return [f for i, f in zip(range(n * 15), c.decode(video=0)) if i % 15 == 0]


def glitch_rgb(planes: np.ndarray, tags: tuple[int, int]) -> np.ndarray:
    """What the glitch service does with the planes (services/glitch/picture.py's call)."""
    h, w = planes.shape[0] * 2 // 3, planes.shape[1]
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    frame.colorspace, frame.color_range = tags
    return VideoReformatter().reformat(frame, w, h, "rgb24", threads=1).to_ndarray()


needs_game = pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")


@needs_game
@pytest.mark.parametrize("tags", [None, (1, 1), (1, 2)])  # as decoded (BT.470BG, limited), BT.709 limited, BT.709 full
def test_a_kept_size_yuv420p_source_sends_its_planes_and_they_convert_to_the_same_rgb(tags) -> None:
    rgb, yuv = Sampler("glitch", GLITCH), Sampler("glitch", PASS)
    for frame in game_frames():
        if tags:
            frame.colorspace, frame.color_range = tags
        planes, sent_tags = yuv.sample(frame)
        assert planes.shape == (1080, 1280) and planes.nbytes == 1280 * 720 * 3 // 2
        assert sent_tags == (tags or (5, 1))
        expected, none = rgb.sample(frame)
        assert none is None and expected.shape == (720, 1280, 3)
        assert np.array_equal(glitch_rgb(planes, sent_tags), expected)


def test_a_shrunk_yuv420p_source_sends_the_small_planes_and_they_convert_to_the_same_rgb(hd_frames) -> None:
    rgb, yuv = Sampler("glitch", GLITCH), Sampler("glitch", PASS)
    for frame in hd_frames:
        planes, tags = yuv.sample(frame)
        assert yuv._two_step and planes.shape == (1080, 1280)
        assert np.array_equal(glitch_rgb(planes, tags), rgb.convert(frame))


@needs_game
@pytest.mark.parametrize("fmt", ["yuv444p", "yuv422p", "yuvj420p", "rgb24"])
def test_other_sources_still_send_rgb(fmt) -> None:
    rgb, yuv = Sampler("glitch", GLITCH), Sampler("glitch", PASS)
    for frame in game_frames(3):
        other = frame.reformat(format=fmt)
        image, tags = yuv.sample(other)
        assert tags is None and image.shape == (720, 1280, 3)
        assert np.array_equal(image, rgb.convert(other))


@needs_game
def test_a_mild_shrink_or_an_unconvertible_tag_keeps_rgb() -> None:
    mild = ConsumerSpec(fps=2.0, format="rgb24", max_width=1120, max_height=630, pass_yuv420p=True)  # scaled and converted in one call
    frame = game_frames(1)[0]
    image, tags = Sampler("glitch", mild).sample(frame)
    assert tags is None and image.shape == (630, 1120, 3)
    frame.colorspace = 8  # YCgCo: swscale converts no frame so tagged; no planes are sent, as before
    with pytest.raises(av.error.OSError):
        Sampler("glitch", GLITCH).convert(frame)
    with pytest.raises(av.error.OSError):
        Sampler("glitch", PASS).sample(frame)


def test_pass_yuv420p_is_only_for_rgb_consumers() -> None:
    with pytest.raises(ValueError, match="pass_yuv420p needs format 'rgb24'"):
        ConsumerSpec(fps=5.0, format="gray", width=320, pass_yuv420p=True)
