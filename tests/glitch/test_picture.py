"""YUV420P glitch frames: the same RGB, scores and incidents as the RGB24 frames of the same
pictures, and bad ones refused with a clear reason.

Real gameplay (openarena_dm2.mp4, yuv420p tagged BT.470BG limited range, and the same frames
tagged BT.709) with a green, a stripes and a grey stretch planted in the source's YUV goes
through ingest's sampler both ways (RGB24, and YUV420P with pass_yuv420p) and its message
builder; the glitch side turns each message into its picture (services/glitch/picture.py) and
runs the shipped classifier and the detector on it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from services.glitch.detector import DetectorConfig, StreamDetector
from services.glitch.picture import Pictures, check
from services.ingest.items import SampledFrame
from services.ingest.messages import video_frame
from services.ingest.sampling import ConsumerSpec, Sampler
from streamsight.bus import BadMessage
from streamsight.gen.media.v1 import media_pb2
from training.glitch import corrupt

GAME = Path(__file__).resolve().parents[3] / "shared" / "data" / "media" / "openarena_dm2.mp4"
RGB = ConsumerSpec(fps=2.0, format="rgb24", max_width=1280, max_height=720)
YUV = ConsumerSpec(fps=2.0, format="rgb24", max_width=1280, max_height=720, pass_yuv420p=True)
PLANTED = {6: "green", 7: "green", 8: "green", 12: "stripes", 13: "stripes", 17: "grey", 18: "grey"}


def source_frames(tags: tuple[int, int] | None) -> list[av.VideoFrame]:
    """Every 15th frame of the first 10 s (2 fps), corruption planted in the decoded YUV."""
    with av.open(str(GAME)) as c:
        frames = [f for i, f in zip(range(300), c.decode(video=0)) if i % 15 == 0]
    out = []
    for n, frame in enumerate(frames):
        if n in PLANTED:
            rgb = frame.to_ndarray(format="rgb24")
            bad = corrupt.corrupt(rgb, frames[n + 1].to_ndarray(format="rgb24"), PLANTED[n], np.random.default_rng(n))[0]
            frame = av.VideoFrame.from_ndarray(bad, format="rgb24").reformat(format="yuv420p")
        frame.colorspace, frame.color_range = tags or (5, 1)  # as the file's frames are tagged
        frame.pts, frame.time_base = frames[n].pts, frames[n].time_base
        out.append(frame)
    return out


def messages(frames: list[av.VideoFrame], spec: ConsumerSpec) -> list[media_pb2.VideoFrame]:
    sampler = Sampler("glitch", spec)
    out = []
    for n, frame in enumerate(frames):
        image, yuv = sampler.sample(frame)
        item = SampledFrame("glitch", n * 15, n * 0.5, 0, image, frame.width, frame.height, yuv)
        out.append(media_pb2.VideoFrame.FromString(video_frame("s", item, n)))
    return out


def incidents(classifier, msgs: list[media_pb2.VideoFrame]):
    pictures, detector = Pictures(), StreamDetector(DetectorConfig(report_freeze=False))
    images, scores = [], []
    for m in msgs:
        check(m)
        images.append(pictures.rgb(m))
    scores = classifier.classify(images)
    for m, score, rgb in zip(msgs, scores, images):
        detector.add_frame(m.pts_s, score, rgb)
    return images, scores, detector.advance() + detector.finish()


@pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")
@pytest.mark.parametrize("tags", [None, (1, 1)], ids=["as-decoded", "bt709"])
def test_yuv420p_frames_give_the_same_pictures_scores_and_incidents_as_rgb24(classifier, tags) -> None:
    frames = source_frames(tags)
    yuv, rgb = messages(frames, YUV), messages(frames, RGB)
    assert {m.format for m in yuv} == {media_pb2.PIXEL_FORMAT_YUV420P} and {m.format for m in rgb} == {media_pb2.PIXEL_FORMAT_RGB24}
    assert sum(len(m.data) for m in yuv) * 2 == sum(len(m.data) for m in rgb)
    yuv_images, yuv_scores, yuv_events = incidents(classifier, yuv)
    rgb_images, rgb_scores, rgb_events = incidents(classifier, rgb)
    for n, (a, b) in enumerate(zip(yuv_images, rgb_images)):
        assert np.array_equal(a, b), f"picture {n} differs"
    for a, b in zip(yuv_scores, rgb_scores):
        assert (a.corrupt, a.kind, a.kinds, a.bands, a.sheared, a.chroma_shifted) == (b.corrupt, b.kind, b.kinds, b.bands, b.sheared, b.chroma_shifted)
        assert np.array_equal(a.tile_scores, b.tile_scores)
    assert yuv_events == rgb_events
    assert {e.kind for e in yuv_events} == {"green", "stripes", "grey"}, [(e.phase, e.kind, e.start_s) for e in yuv_events]  # all planted damage seen


def frame(w: int, h: int, size: int, fmt: int = media_pb2.PIXEL_FORMAT_YUV420P, **tags) -> media_pb2.VideoFrame:
    return media_pb2.VideoFrame(stream_id="s", width=w, height=h, format=fmt, data=bytes(size), **tags)


@pytest.mark.parametrize("bad, reason", [
    (frame(64, 64, 64 * 64 * 3), "frame of 64x64 YUV420P needs 6144 bytes, got 12288"),
    (frame(64, 64, 100), "needs 6144 bytes, got 100"),
    (frame(63, 64, 63 * 64 * 3 // 2), "width and height must be even"),
    (frame(0, 64, 0), "glitch frame of 0x64 pixels"),
    (frame(64, 64, 6144, color_space=8), "tagged colour space 8, range 0"),
    (frame(64, 64, 6144, color_range=3), "tagged colour space 0, range 3"),
    (frame(64, 64, 100, fmt=media_pb2.PIXEL_FORMAT_RGB24), "frame of 64x64 RGB24 needs 12288 bytes, got 100"),
    (frame(64, 64, 4096, fmt=media_pb2.PIXEL_FORMAT_GRAY8), "glitch frame is PIXEL_FORMAT_GRAY8, expected RGB24 or YUV420P"),
    (frame(64, 64, 4096, fmt=9), "glitch frame is pixel format 9, expected RGB24 or YUV420P"),
])
def test_bad_frames_are_refused_with_a_clear_reason(bad, reason) -> None:
    with pytest.raises(BadMessage, match=reason):
        check(bad)


def test_a_yuv420p_frame_converts_with_its_colour_tags() -> None:
    planes = np.full((96, 64), 128, np.uint8)
    planes[:64] = 235  # white luma, neutral chroma: limited range white, full range near white
    pictures = Pictures()  # one kept context for both
    limited = pictures.rgb(media_pb2.VideoFrame(width=64, height=64, format=media_pb2.PIXEL_FORMAT_YUV420P, data=planes.tobytes(), color_range=1))
    full = pictures.rgb(media_pb2.VideoFrame(width=64, height=64, format=media_pb2.PIXEL_FORMAT_YUV420P, data=planes.tobytes(), color_range=2))
    assert limited.shape == (64, 64, 3) and limited.min() == 255
    assert full.max() == 235
