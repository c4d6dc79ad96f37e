"""Flat fill bands: found on real footage after H.264, never on clean real frames, and only new
bands count as damage in the detector."""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch.bands import Band, find_bands, new_bands
from services.glitch.classifier import FrameScore
from services.glitch.detector import DetectorConfig, StreamDetector
from training.glitch import corrupt, scenes


@pytest.fixture(scope="module")
def vtest(shared_data) -> np.ndarray:
    frames, _, _ = scenes.decode(shared_data / "media" / "vtest.avi")
    return frames[::8]


def _thin_band(frame: np.ndarray, kind: str, top: int, rows: int) -> np.ndarray:
    """A band of `rows` macroblock rows filled the decoder's way, through corrupt.fill's colours."""
    filled, _, _ = corrupt.fill(frame, np.random.default_rng(1), kind, whole=True)
    out = frame.copy()
    out[top : top + rows] = filled[top : top + rows]
    return out


@pytest.mark.parametrize("kind", ["green", "grey"])
def test_a_thin_band_is_found_after_h264_on_real_footage(vtest, tmp_path, kind) -> None:
    frames = np.stack([_thin_band(f, kind, 96 + 16 * (i % 20), 16) for i, f in enumerate(vtest[:24])])
    path = tmp_path / "bands.mkv"
    scenes.encode(frames, path, crf=28, gop=10, fps=10)
    decoded, _, _ = scenes.decode(path)
    found = [find_bands(f) for f in decoded]
    hits = [b for i, bands in enumerate(found) for b in bands if b.kind == kind and abs(b.top - (96 + 16 * (i % 20))) <= 4]
    assert len(hits) == len(decoded), f"{len(hits)} of {len(decoded)} frames"
    assert all(12 <= b.rows <= 20 for b in hits)


def test_clean_real_frames_have_no_fill_band(vtest, shared_data) -> None:
    bbb, _, _ = scenes.decode(shared_data / "media" / "bigbuckbunny.mp4")
    assert [b for f in list(vtest) + list(bbb) for b in find_bands(f)] == []


def test_black_and_white_bars_are_not_grey_fill() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    frame[:40] = 16  # letterbox
    frame[-40:] = 235
    frame[150:170] = 128
    assert [(b.kind, b.top, b.bottom) for b in find_bands(frame)] == [("grey", 150, 170)]


def test_a_band_already_in_the_previous_sample_is_not_new() -> None:
    grey = Band("grey", 96, 128, 128.0)
    assert new_bands([grey], [Band("grey", 96, 126, 129.0)]) == []
    assert new_bands([grey], [Band("green", 96, 128, 135.0)]) == [grey]
    assert new_bands([grey], [Band("grey", 300, 332, 128.0)]) == [grey]


def _sample(bands: tuple[Band, ...] = (), grey: float = 0.01) -> FrameScore:
    return FrameScore(max(grey, 0.02), "grey", np.array([max(grey, 0.02)]), {"stripes": 0.01, "macroblocking": 0.02, "green": 0.01, "grey": grey}, bands)


def _run(det: StreamDetector, band_at: dict[float, tuple[Band, ...]], seconds: float, grey_at: dict[float, float] | None = None) -> list:
    rgb = np.zeros((72, 128, 3), np.uint8)
    events = []
    for k in range(int(seconds * 2)):
        det.add_frame(k / 2, _sample(band_at.get(k / 2, ()), (grey_at or {}).get(k / 2, 0.01)), rgb)
        events += det.advance(k / 2)
    return events + det.finish()


def test_a_band_that_appears_opens_one_grey_incident() -> None:
    band = (Band("grey", 64, 96, 128.0),)
    events = _run(StreamDetector(), {4.0: band, 4.5: band}, 10)
    assert [(e.phase, e.kind, e.start_s, e.end_s) for e in events] == [("start", "grey", 4.0, 4.0), ("end", "grey", 4.0, 4.5)]


def test_a_band_from_the_start_or_there_for_long_is_part_of_the_picture() -> None:
    hud = (Band("grey", 640, 720, 110.0),)
    assert _run(StreamDetector(), {k / 2: hud for k in range(40)}, 20) == []
    slate = (Band("green", 0, 720, 135.0),)  # appears at 5 s and stays: one incident, ended once it is part of the picture
    events = _run(StreamDetector(DetectorConfig(band_persist_s=4.0)), {k / 2: slate for k in range(10, 60)}, 30)
    assert [(e.phase, e.kind) for e in events] == [("start", "green"), ("end", "green")]
    assert events[1].end_s == pytest.approx(8.5)


def test_the_classifier_grey_score_alone_opens_nothing_a_band_does() -> None:
    high = {4.0: 0.99, 4.5: 0.99}
    assert _run(StreamDetector(), {}, 10, grey_at=high) == []
    band = (Band("grey", 0, 360, 128.0),)
    events = _run(StreamDetector(), {4.0: band, 4.5: band}, 10, grey_at=high)
    assert [(e.phase, e.kind) for e in events] == [("start", "grey"), ("end", "grey")]
