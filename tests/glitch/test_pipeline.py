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


PLANTED = (("stripes", 2.0), ("green", 5.0), ("grey", 8.0), ("stripes", 11.0), ("stripes", 14.0))


def test_planted_incidents_open_and_close_once_each_with_their_kind(classifier, tmp_path) -> None:
    frames = held_out_scene(TEST_SEEDS[1], 17.0)
    for kind, t in PLANTED:
        frames = plant(frames, kind, t, seed=int(t))
    events, _, _, _ = run_detector(encode(frames, tmp_path / "planted.mkv"), classifier, DetectorConfig())
    starts, ends = starts_and_ends(events)
    shown = [(e.phase, e.kind, e.start_s) for e in events]
    assert [e.incident for e in ends] == [e.incident for e in starts] == list(range(len(starts))), shown
    found = {}
    for start, end in zip(starts, ends):
        kind, t = next(((k, t) for k, t in PLANTED if t <= start.start_s <= t + 0.5), (None, None))
        assert kind is not None, f"an incident outside the planted ones (found within one 2 fps sample of a start): {shown}"
        assert t not in found, f"the incident at {t} s opened twice: {shown}"
        found[t] = start.kind
        assert end.kind == start.kind == kind and end.thumbnail_jpeg[:2] == b"\xff\xd8", shown
        assert t + 0.4 <= end.end_s <= t + 1.0
    # green and grey come from the fill-band check, which finds every planted band; the classifier
    # caught 8 of 12 planted 1 s stripes incidents on held-out footage (models/MODEL.md)
    assert 5.0 in found and 8.0 in found, shown
    assert sum(1 for k, t in PLANTED if k == "stripes" and t in found) >= 2, shown


def test_dropped_packets_raise_no_decoder_error_but_are_caught(classifier, tmp_path) -> None:
    src = encode(held_out_scene(TEST_SEEDS[0], 8.0, pan=10.0), tmp_path / "src.mkv")
    dst = tmp_path / "dropped.mkv"
    damage.damage_file(src, dst, {76: "drop", 77: "drop"}, np.random.default_rng(0))  # P-frames at 3.04 s; keyframe at 4 s
    events, _, _, _ = run_detector(dst, classifier, DetectorConfig())
    starts, ends = starts_and_ends(events)
    assert len(starts) == 1 and len(ends) == 1, [(e.phase, e.kind, e.start_s) for e in events]
    assert starts[0].kind in ("macroblocking", "grey", "green")  # what the picture shows: no decoder error was raised
    assert 3.0 <= starts[0].start_s <= 4.0
