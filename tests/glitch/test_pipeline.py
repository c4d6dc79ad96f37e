"""Real ingest (PyAV decode, 2 fps glitch sampling, decoder signals) + the detector, without NATS."""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch.detector import DetectorConfig
from training.glitch import damage
from training.glitch.evaluate import run_detector

from .conftest import TEST_SEEDS, encode, held_out_scene, plant


def starts_and_ends(events):
    return [e for e in events if e.phase == "start"], [e for e in events if e.phase == "end"]


@pytest.mark.slow
def test_clean_real_footage_raises_no_event(classifier, shared_data) -> None:
    for name in ("bigbuckbunny.mp4", "vtest.avi"):
        events, duration, frames, _ = run_detector(shared_data / "media" / name, classifier, DetectorConfig())
        assert frames >= 2 * duration - 1, "the default 2 fps sampling ran"
        assert events == [], f"{name}: {[(e.phase, e.kind, e.start_s) for e in events]}"


def test_planted_incidents_open_and_close_once_each_with_their_kind(classifier, tmp_path) -> None:
    frames = held_out_scene(TEST_SEEDS[1], 11.0)
    for kind, t in (("stripes", 2.0), ("green", 5.0), ("grey", 8.0)):
        frames = plant(frames, kind, t, seed=int(t))
    events, _, _, _ = run_detector(encode(frames, tmp_path / "planted.mkv"), classifier, DetectorConfig())
    starts, ends = starts_and_ends(events)
    assert [e.kind for e in starts] == ["stripes", "green", "grey"], [(e.phase, e.kind, e.start_s) for e in events]
    assert [e.incident for e in ends] == [e.incident for e in starts] == [0, 1, 2]
    for start, end, t in zip(starts, ends, (2.0, 5.0, 8.0)):
        assert t <= start.start_s <= t + 0.5, "found within one 2 fps sample of its start"
        assert t + 0.4 <= end.end_s <= t + 1.0
        assert end.kind == start.kind and end.thumbnail_jpeg[:2] == b"\xff\xd8"


def test_dropped_packets_raise_no_decoder_error_but_are_caught(classifier, tmp_path) -> None:
    src = encode(held_out_scene(TEST_SEEDS[0], 8.0, pan=10.0), tmp_path / "src.mkv")
    dst = tmp_path / "dropped.mkv"
    damage.damage_file(src, dst, {76: "drop", 77: "drop"}, np.random.default_rng(0))  # P-frames at 3.04 s; keyframe at 4 s
    events, _, _, _ = run_detector(dst, classifier, DetectorConfig())
    starts, ends = starts_and_ends(events)
    assert len(starts) == 1 and len(ends) == 1, [(e.phase, e.kind, e.start_s) for e in events]
    assert starts[0].kind in ("macroblocking", "grey", "green")  # what the picture shows: no decoder error was raised
    assert 3.0 <= starts[0].start_s <= 4.0
