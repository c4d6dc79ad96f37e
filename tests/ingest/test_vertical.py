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


def test_a_cut_clip_with_an_uneven_average_rate_keeps_every_frame(tmp_path, shared_data):
    """A 3 s stream-copy cut of real gameplay (30 fps, timestamps in 1/15360 s) reports an average
    rate of 1365/46; in a time base of 1/that rate two frames fell on one tick and the muxer refused."""
    cut = tmp_path / "cut.mp4"
    with av.open(str(shared_data / "media" / "openarena_dm2.mp4")) as inp, av.open(str(cut), "w") as out:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        copies = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(*streams):
            if packet.pts is None or packet.pts * packet.time_base > 3:
                continue
            packet.stream = copies[packet.stream.index]
            out.mux(packet)
    with av.open(str(cut)) as c:
        assert c.streams.video[0].average_rate.denominator != 1, "the case under test: an uneven rate"
        source_times = [f.time for f in c.decode(video=0)]
    out = export_vertical(cut, tmp_path / "cut.vertical.mp4")
    with av.open(str(out.path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (404, 720)
        times = [f.time for f in c.decode(video=0)]
    assert len(times) == len(source_times) == out.frames
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] - times[0] == pytest.approx(source_times[-1] - source_times[0], abs=1 / 30)
