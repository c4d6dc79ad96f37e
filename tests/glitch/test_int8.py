"""The int8 glitch classifier (glitch_cnn.int8.onnx): its card, its setting, and that it answers as
the fp32 model does on held-out footage (the frame-level quality tests run on it as the default)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from services.glitch.classifier import DEFAULT_PRECISION, INT8_FILE, MODEL_DIR, MODEL_FILE, GlitchClassifier, shipped_model
from services.glitch.detector import DetectorConfig
from services.glitch.settings import GlitchSettings
from streamsight.inference import model_digest
from training.glitch import corrupt, scenes

from .conftest import TEST_SEEDS, held_out_scene

OPEN = DetectorConfig().open_score
# On 580 held-out real frames (training/glitch/compare_precision.py) the int8 score was within
# 0.028 of fp32's, and within 0.055 on the calibration tiles; 0.06 leaves room for other scenes.
SCORE_TOLERANCE = 0.06


def test_int8_model_is_small_and_matches_its_card() -> None:
    path = MODEL_DIR / INT8_FILE
    assert path.stat().st_size < 1_000_000
    card = (MODEL_DIR / "MODEL.md").read_text()
    declared = re.search(r"int8 sha256[^0-9a-f]*([0-9a-f]{64})", card)
    assert declared, "MODEL.md names no int8 sha256"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == declared.group(1)


def test_precision_setting_picks_the_model_and_its_digest_differs() -> None:
    assert DEFAULT_PRECISION == "int8"
    assert GlitchSettings().model_path == MODEL_DIR / INT8_FILE
    assert GlitchSettings(model_precision="fp32").model_path == MODEL_DIR / MODEL_FILE
    assert GlitchSettings(model_precision="fp32", model_path=MODEL_DIR / INT8_FILE).model_path == MODEL_DIR / INT8_FILE  # an explicit path wins
    assert model_digest(shipped_model("int8")) != model_digest(shipped_model("fp32"))
    with pytest.raises(ValueError, match="int8"):
        shipped_model("fp16")
    with pytest.raises(ValueError):
        GlitchSettings(model_precision="fp16")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[list[np.ndarray], list[str]]:
    """Held-out coded frames (a seed no model saw, nor int8 calibration), clean and with each synthetic kind."""
    path = tmp_path_factory.mktemp("int8") / "clean.mkv"
    scenes.encode(held_out_scene(TEST_SEEDS[1], 2.0), path, crf=23)
    clean = scenes.decode(path)[0]
    rng = np.random.default_rng(8)
    frames, truths = [], []
    for n, i in enumerate(range(3, len(clean) - 1, 6)):
        kind = ("clean", "stripes", "green", "grey")[n % 4]
        frames.append(clean[i] if kind == "clean" else corrupt.corrupt(clean[i], clean[i + 1], kind, rng)[0])
        truths.append(kind)
    return frames, truths


def test_int8_scores_and_decisions_match_fp32_on_held_out_frames(cases) -> None:
    frames, truths = cases
    fp32 = GlitchClassifier(intra_threads=2, precision="fp32").classify(frames)
    int8 = GlitchClassifier(intra_threads=2, precision="int8").classify(frames)
    diffs = [abs(a.corrupt - b.corrupt) for a, b in zip(fp32, int8)]
    assert max(diffs) <= SCORE_TOLERANCE, diffs
    tile_diff = max(float(np.abs(a.tile_scores - b.tile_scores).max()) for a, b in zip(fp32, int8))
    assert tile_diff <= SCORE_TOLERANCE, tile_diff
    # a decision may only differ where fp32's score sits within the tolerance of the open score
    for a, b, truth in zip(fp32, int8, truths):
        if abs(a.corrupt - OPEN) > SCORE_TOLERANCE:
            assert (a.corrupt >= OPEN) == (b.corrupt >= OPEN), (truth, a.corrupt, b.corrupt)
        assert a.misread == b.misread or max(a.kinds["stripes"], b.kinds["stripes"]) > 0.5, truth


def test_int8_calls_the_corrupted_frames_and_not_the_clean_ones(cases) -> None:
    frames, truths = cases
    scores = GlitchClassifier(intra_threads=2, precision="int8").classify(frames)
    bad = [s.corrupt >= OPEN or s.misread or bool(s.bands) for s in scores]
    corrupted = [b for b, t in zip(bad, truths) if t != "clean"]
    clean = [b for b, t in zip(bad, truths) if t == "clean"]
    assert np.mean(corrupted) >= 0.7, list(zip(truths, [round(s.corrupt, 3) for s in scores]))
    assert not any(clean), list(zip(truths, [round(s.corrupt, 3) for s in scores]))
