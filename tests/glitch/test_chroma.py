"""The chroma-registration check for wrong heights (chroma.py), alone and in the classifier (the detector's use: test_detector)."""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch import chroma
from training.glitch import corrupt, scenes

from .test_shear import coded


def read_with_height(frame: np.ndarray, next_frame: np.ndarray, d: int) -> np.ndarray:
    """The frame's I420 bytes read back d rows too tall (d < 0: too short), scaled back to its size."""
    h, w, _ = frame.shape
    return corrupt.resize(corrupt.read_as(frame, next_frame, w, h + d), w, h)


@pytest.fixture(scope="module")
def real(shared_data) -> dict[str, np.ndarray]:
    media = shared_data / "media"
    return {"vtest": scenes.decode(media / "vtest.avi")[0][::100], "bbb": scenes.decode(media / "bigbuckbunny.mp4")[0][::20]}


@pytest.mark.parametrize(("source", "d"), [("vtest", 8), ("vtest", 16), ("vtest", 24), ("bbb", -8), ("bbb", -16), ("bbb", -24)])
def test_real_frames_read_with_a_wrong_height_slide_their_colour_by_that_height(real, tmp_path, source, d) -> None:
    frames = real[source]
    bad = coded([read_with_height(frames[i], frames[i + 1], d) for i in range(len(frames) - 1)], tmp_path)
    found = [chroma.measure(f) for f in bad]
    assert all(abs(m.shift + d) <= 2 for m in found), found  # U slides d quarter-resolution rows against the read
    assert sum(chroma.wrong_height(m) for m in found) >= 0.6 * len(found), found


def test_clean_real_frames_keep_their_colour_in_place(real) -> None:
    found = [chroma.measure(f) for frames in real.values() for f in frames]
    assert not any(chroma.wrong_height(m) for m in found), found
    assert not any(m.u_agrees and m.v_agrees and abs(m.shift) >= chroma.MIN_SHIFT for m in found), found


def test_colour_offset_from_the_luma_by_other_than_the_i420_slope_is_not_a_wrong_height() -> None:
    # a picture whose U and V edges both sit 12 rows below its luma edges: shifted, but not as a wrong height shifts them
    rng = np.random.default_rng(3)
    luma = np.repeat(np.repeat(rng.uniform(40, 200, (23, 40)), 16, 0), 16, 1)[:360, :640]
    colour = np.roll(luma, 48, axis=0) - 120.0
    rgb = np.stack([luma + 0.8 * colour, luma - 0.4 * colour, luma + 0.9 * colour], axis=-1).clip(0, 255).astype(np.uint8)
    m = chroma.measure(rgb)
    assert m.shift == 12 and m.u_agrees and not m.v_agrees and not chroma.wrong_height(m), m


def test_the_classifier_checks_every_frame_for_slid_colour(classifier, real, tmp_path) -> None:
    bbb = real["bbb"]
    bad = coded([read_with_height(bbb[i], bbb[i + 1], -12) for i in range(3)], tmp_path)
    scores = classifier.classify(list(bad) + list(bbb[:3]))
    assert [s.chroma_shifted for s in scores] == [True] * 3 + [False] * 3, [(round(s.kinds["stripes"], 2), s.chroma_shifted) for s in scores]
