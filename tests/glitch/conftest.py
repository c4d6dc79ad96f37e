"""Shared pieces of the glitch tests: the shipped classifier and held-out generated footage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.glitch.classifier import GlitchClassifier
from training.glitch import corrupt, scenes

# Scene seeds of the tests: not in training.glitch.dataset's train/val seeds nor the evaluation's.
TEST_SEEDS = (9001, 9002)


@pytest.fixture(scope="session")
def classifier() -> GlitchClassifier:
    return GlitchClassifier(intra_threads=2)


def held_out_scene(seed: int, seconds: float, size: tuple[int, int] = (640, 360), pan: float = 6.0) -> np.ndarray:
    """A generated scene no model saw, with steady motion (so packet loss smears it)."""
    rng = np.random.default_rng(seed)
    spec = scenes.random_spec(rng, seed, frames=int(seconds * scenes.FPS))
    spec.width, spec.height = size
    spec.pan_px, spec.cut_at, spec.fade, spec.dark, spec.crf = pan, None, False, False, 23
    return scenes.render(spec, rng)


def plant(frames: np.ndarray, kind: str, start_s: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """The same corruption setting over [start_s, start_s + seconds), as a broken source gives."""
    out = frames.copy()
    a, b = int(round(start_s * scenes.FPS)), int(round((start_s + seconds) * scenes.FPS))
    for i in range(a, b):
        out[i] = corrupt.corrupt(frames[i], frames[i + 1], kind, np.random.default_rng(seed))[0]
    return out


def encode(frames: np.ndarray, path: Path) -> Path:
    scenes.encode(frames, path, crf=23, gop=2 * scenes.FPS)
    return path
