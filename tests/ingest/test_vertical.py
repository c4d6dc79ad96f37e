"""Vertical 9:16 clips (services/ingest/vertical.py): the crop follows the motion, the file plays."""

from __future__ import annotations

import av
import numpy as np
import pytest

from services.ingest.vertical import VerticalError, crop_width, export_vertical, motion_center


def clip(path, width=320, height=180, frames=30, square_x=(240, 300), audio=True, moving=True):
    """A still textured scene with a bright square moving up and down inside square_x."""
    rng = np.random.default_rng(1)
    background = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=15)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000) if audio else None
        for i in range(frames):
            img = background.copy()
            y = int((height - 30) * (0.5 + 0.5 * np.sin(i / 2))) if moving else 10
            x = square_x[0] + (i * 7) % max(1, square_x[1] - square_x[0] - 20) if moving else square_x[0]
            img[y : y + 30, x : x + 20] = 255
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            if a is not None:
                samples = (0.1 * np.sin(np.arange(3200) / 10)).astype(np.float32).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                frame.sample_rate = 48000
                out.mux(a.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            out.mux(a.encode(None))
    return path


def test_the_crop_follows_the_motion_and_the_vertical_clip_plays(tmp_path):
    src = clip(tmp_path / "wide.mp4")
    center = motion_center(src)
    assert center > 0.7  # the square moves in the right fifth
    out = export_vertical(src, tmp_path / "wide.vertical.mp4")
    assert (out.width, out.height) == (crop_width(320, 180), 180) == (100, 180)
    assert out.x + out.width >= 260 and out.x <= 240
    with av.open(str(out.path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (100, 180)
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
        assert c.streams.audio, "the sound comes along"
    assert len(frames) == 30 == out.frames
    assert max(f.max() for f in frames) > 200  # the moving square is in the picture


def test_a_still_clip_is_cropped_in_the_middle_and_a_narrow_one_is_refused(tmp_path):
    still = clip(tmp_path / "still.mp4", square_x=(0, 40), frames=4, audio=False, moving=False)
    assert motion_center(still) == pytest.approx(0.5, abs=0.2)
    narrow = clip(tmp_path / "narrow.mp4", width=96, height=180, square_x=(10, 60), frames=4, audio=False)
    with pytest.raises(VerticalError, match="not wider than 9:16"):
        export_vertical(narrow, tmp_path / "narrow.vertical.mp4")
    with pytest.raises(VerticalError, match="cannot read"):
        motion_center(tmp_path / "missing.mp4")
