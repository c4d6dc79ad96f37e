"""The second opinion on stripes (GlitchClassifier's `verifier`; the service's glitch.stripes_verifier)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from services.glitch.classifier import GlitchClassifier, shipped_verifier
from services.glitch.settings import GlitchSettings
from training.glitch import corrupt, scenes
from training.glitch.evaluate_sizes import frames_of

# Wrong reads of a real game frame, some of them drawn for openarena_dm2 by held-out seed 21.
MISREADS = (("width", 39), ("width", -47), ("width", 57), ("width", 23), ("height", 55), ("height", 72), ("height", 40))


@pytest.fixture(scope="module")
def game(shared_data) -> np.ndarray:
    return frames_of(shared_data / "media" / "openarena_dm2.mp4", 20.0, 20.2)[0]


@pytest.fixture(scope="module")
def misread(game, tmp_path_factory) -> np.ndarray:
    h, w, _ = game[0].shape
    bad = [corrupt.resize(corrupt.read_as(game[0], game[1], w + d if how == "width" else w, h + d if how == "height" else h), w, h)
           for how, d in MISREADS]
    path = tmp_path_factory.mktemp("verifier") / "misread.mkv"
    scenes.encode(np.stack(bad), path, crf=23, gop=1)
    return scenes.decode(path)[0]


def test_a_verified_frame_keeps_the_lower_stripes_of_the_two_models_and_nothing_else_changes(game, misread) -> None:
    frames = [game[0], game[3], *misread]
    alone = GlitchClassifier(intra_threads=2).classify(frames)
    second = GlitchClassifier(shipped_verifier(), intra_threads=2).classify(frames)
    pair = GlitchClassifier(intra_threads=2, verifier=shipped_verifier(), verify_from=1e-6).classify(frames)  # every frame verified
    for a, b, p in zip(alone, second, pair):
        assert np.allclose(p.stripes_grid, np.minimum(a.stripes_grid, b.stripes_grid), atol=1e-6)
        assert p.kinds["stripes"] == pytest.approx(float(p.stripes_grid.max()), abs=1e-6)
        assert {k: v for k, v in p.kinds.items() if k != "stripes"} == {k: v for k, v in a.kinds.items() if k != "stripes"}
        assert (p.corrupt, p.kind, p.sheared, p.chroma_shifted) == (a.corrupt, a.kind, a.sheared, a.chroma_shifted)
    assert any(b.kinds["stripes"] < a.kinds["stripes"] - 0.01 for a, b in zip(alone, second)), "the two models differ somewhere"


def test_frames_under_verify_from_are_not_asked_about(game, misread) -> None:
    frames = [game[0], *misread]
    alone = GlitchClassifier(intra_threads=2).classify(frames)
    high = GlitchClassifier(intra_threads=2, verifier=shipped_verifier(), verify_from=0.99).classify(frames)
    asked = [a.kinds["stripes"] >= 0.99 for a in alone]
    assert not all(asked)
    for a, h, was_asked in zip(alone, high, asked):
        if not was_asked:
            assert h.kinds == a.kinds and np.array_equal(h.stripes_grid, a.stripes_grid)


def test_real_game_frames_read_with_a_wrong_width_or_height_stay_stripes_with_the_second_opinion(misread) -> None:
    pair = GlitchClassifier(intra_threads=2, verifier=shipped_verifier()).classify(list(misread))
    said = [(how, d, round(s.kinds["stripes"], 3), s.misread) for (how, d), s in zip(MISREADS, pair)]
    assert all(s.kinds["stripes"] >= 0.95 or s.misread for s in pair), said  # a stripes call, or the shear or chroma check's
    assert sum(s.kinds["stripes"] >= 0.95 for s in pair) >= 6, said  # model 5 alone scores width -47 at 0.918 (the shear check finds it)


def test_the_setting_turns_the_second_opinion_on_by_default_and_off(monkeypatch) -> None:
    assert GlitchSettings().verifier_path() == shipped_verifier() and shipped_verifier().is_file()
    monkeypatch.setenv("STREAMSIGHT_GLITCH_STRIPES_VERIFIER", "false")
    assert GlitchSettings().verifier_path() is None
    with pytest.raises(ValueError, match="verify_from"):
        GlitchClassifier(verifier=shipped_verifier(), verify_from=0.0)


def test_the_card_names_the_verifier_file_it_describes() -> None:
    card = (shipped_verifier().parent / "MODEL.md").read_text()
    declared = re.search(r"stripes verifier \| `stripes_verifier.int8.onnx` \([^)]*sha256 `([0-9a-f]{64})`", card)
    assert declared, "MODEL.md names no stripes verifier sha256"
    assert hashlib.sha256(shipped_verifier().read_bytes()).hexdigest() == declared.group(1)
