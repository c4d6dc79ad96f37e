"""A window with only a few milliseconds of audio (AAC padding at a stream's end) is still measured."""

from __future__ import annotations

import math

import numpy as np

from services.audio.analyzer import AudioAnalyzer


def test_a_sliver_of_audio_gives_finite_features():
    analyzer = AudioAnalyzer(sample_rate=32000)
    rng = np.random.default_rng(0)
    out = analyzer.push((rng.normal(0, 0.1, 32000 * 10)).astype(np.float32), 0.0)
    out += analyzer.push((rng.normal(0, 0.1, 512)).astype(np.float32), 10.0)  # 16 ms into window 1
    out += analyzer.flush()
    assert [w.window for w in out] == [0, 1]
    assert all(math.isfinite(v) for v in out[1].features.values())
