"""Recorded glitch evidence (training/glitch/evidence.py) replays to the detector's own events on real ingest."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from services.glitch.detector import DetectorConfig
from training.glitch import damage, evidence
from training.glitch.evaluate import run_detector

from .conftest import TEST_SEEDS, encode, held_out_scene, plant


def _shown(events):
    return [(e.incident, e.phase, e.kind, e.start_s, e.end_s, e.severity, e.confidence, e.update) for e in events]


def test_saved_evidence_replays_to_the_events_of_the_real_pipeline(classifier, tmp_path) -> None:
    frames = plant(held_out_scene(TEST_SEEDS[0], 8.0, pan=10.0), "stripes", 1.0, seed=1)
    src = encode(frames, tmp_path / "src.mkv")
    dst = tmp_path / "damaged.mkv"
    damage.damage_file(src, dst, {126: "drop", 127: "drop"}, np.random.default_rng(0))  # P-frames at 5.04 s: decoder evidence too
    live, _, frames_seen, _ = run_detector(dst, classifier, DetectorConfig())
    assert {e.kind for e in live if e.phase == "start"} >= {"stripes"} and len({e.incident for e in live}) >= 2, _shown(live)

    recorded = evidence.record(dst, classifier, meta={"model_sha256": "abc", "file": dst.name})
    saved = tmp_path / "damaged.evidence.jsonl.gz"
    evidence.save(recorded, saved)
    loaded = evidence.load(saved)
    assert loaded.meta == {"model_sha256": "abc", "file": dst.name} and loaded.frames == frames_seen
    assert any(e[0] == "s" and any(s.frames_missing for s in e[1]) for e in loaded.entries), "the dropped packets' gap was kept"
    for (kind_a, t_a, a), (kind_b, t_b, b) in zip(recorded.entries, loaded.entries):
        assert kind_a == kind_b and (t_a == t_b if kind_a == "f" else True)
        if kind_a == "f":  # exactly, dtypes included: a threshold compares the same numbers
            assert b.tile_scores.dtype == a.tile_scores.dtype == np.float32 and np.array_equal(a.tile_scores, b.tile_scores)
            assert np.array_equal(a.stripes_grid, b.stripes_grid) and b.stripes_grid.dtype == a.stripes_grid.dtype
            assert (a.corrupt, a.kind, a.kinds, a.bands, bool(a.sheared), a.chroma_shifted) == (b.corrupt, b.kind, b.kinds, b.bands, b.sheared, b.chroma_shifted)
    assert _shown(evidence.replay(loaded, DetectorConfig())) == _shown(live)
    # other settings replay without the file: a stricter open score opens no more incidents
    stricter = evidence.replay(loaded, DetectorConfig(open_score=0.999, suspect_score=0.999))
    assert len({e.incident for e in stricter}) <= len({e.incident for e in live})


def test_a_file_that_is_not_evidence_is_refused(tmp_path) -> None:
    other = tmp_path / "other.jsonl.gz"
    with gzip.open(other, "wt") as f:
        f.write('{"about": "something else"}\n')
    with pytest.raises(ValueError, match="not glitch evidence"):
        evidence.load(other)
