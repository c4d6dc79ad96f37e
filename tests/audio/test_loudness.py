"""Loudness against BS.1770-4 and the EBU Tech 3341 / 3342 reference signals, and the block IIR."""

from __future__ import annotations

import numpy as np
import pytest

from services.audio.iir import BlockIIR
from services.audio.loudness import (
    integrated_loudness,
    k_weighting_coefficients,
    loudness_range,
    momentary_loudness,
    short_term_loudness,
)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1)


def test_k_weighting_matches_the_bs1770_table_at_48k():
    (b1, a1), (b2, a2) = k_weighting_coefficients(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-7)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-7)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 32000, 48000])
def test_block_iir_equals_the_direct_recursion_in_any_chunking(rate):
    (b1, a1), (b2, a2) = k_weighting_coefficients(rate)
    b, a = np.convolve(b1, b2), np.convolve(a1, a2)
    x = np.random.default_rng(1).standard_normal(3 * rate)
    # Reference: transposed direct form II, one sample at a time.
    ref = np.empty_like(x)
    z = np.zeros(4)
    for n, v in enumerate(x):
        y = b[0] * v + z[0]
        z[:-1] = b[1:-1] * v - a[1:-1] * y + z[1:]
        z[-1] = b[-1] * v - a[-1] * y
        ref[n] = y
    f = BlockIIR(b, a)
    cuts = [0, 1, 130, 131, rate, 2 * rate + 77, x.size]
    got = np.concatenate([f.process(x[s:e]) for s, e in zip(cuts[:-1], cuts[1:])])
    assert np.max(np.abs(got - ref)) < 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("rate", [8000, 16000, 32000, 44100, 48000])
def test_tech3341_case1_stereo_sine_at_minus23_reads_minus23_lufs(audio_io, rate):
    x = stereo(audio_io.sine(-23.0, 20.0, rate))
    assert integrated_loudness(x, rate) == pytest.approx(-23.0, abs=0.1)
    assert momentary_loudness(x, rate).max() == pytest.approx(-23.0, abs=0.1)
    assert short_term_loudness(x, rate).min() == pytest.approx(-23.0, abs=0.1)


def test_tech3341_case2_minus33(audio_io):
    assert integrated_loudness(stereo(audio_io.sine(-33.0, 20.0, 48000)), 48000) == pytest.approx(-33.0, abs=0.1)


def test_tech3341_cases_3_4_gating(audio_io):
    s = lambda db, sec: audio_io.sine(db, sec, 48000)  # noqa: E731
    case3 = np.concatenate([s(-36, 10), s(-23, 60), s(-36, 10)])
    case4 = np.concatenate([s(-72, 10), s(-36, 10), s(-23, 60), s(-36, 10), s(-72, 10)])
    assert integrated_loudness(stereo(case3), 48000) == pytest.approx(-23.0, abs=0.1)
    assert integrated_loudness(stereo(case4), 48000) == pytest.approx(-23.0, abs=0.1)


def test_tech3341_case6_five_channels_use_surround_weights(audio_io):
    s = lambda db: audio_io.sine(db, 20.0, 48000)  # noqa: E731
    x = np.stack([s(-28), s(-28), s(-24), s(-30), s(-30)], axis=1)
    assert integrated_loudness(x, 48000, "5.0") == pytest.approx(-23.0, abs=0.1)
    # Same programme as 5.1 with a loud LFE: the LFE must not count.
    lfe = audio_io.sine(0.0, 20.0, 48000, freq=60.0)
    x51 = np.stack([s(-28), s(-28), s(-24), lfe, s(-30), s(-30)], axis=1)
    assert integrated_loudness(x51, 48000) == pytest.approx(-23.0, abs=0.1)


def test_tech3341_short_term_and_momentary_of_alternating_tones(audio_io):
    s = lambda db, sec: audio_io.sine(db, sec, 48000)  # noqa: E731
    short = np.concatenate([np.concatenate([s(-20, 1.34), s(-30, 1.66)]) for _ in range(10)])
    st = short_term_loudness(stereo(short), 48000)
    assert st.min() == pytest.approx(-23.0, abs=0.1) and st.max() == pytest.approx(-23.0, abs=0.1)
    mom = np.concatenate([np.concatenate([s(-20, 0.18), s(-30, 0.22)]) for _ in range(25)])
    m = momentary_loudness(stereo(mom), 48000)
    assert m.min() == pytest.approx(-23.0, abs=0.1) and m.max() == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize(("levels", "lra"), [((-20, -30), 10), ((-20, -15), 5), ((-40, -20), 20), ((-50, -35, -20, -35, -50), 15)])
def test_tech3342_loudness_range(audio_io, levels, lra):
    x = np.concatenate([audio_io.sine(db, 20.0, 48000) for db in levels])
    assert loudness_range(stereo(x), 48000) == pytest.approx(lra, abs=1.0)


def test_silence_reads_the_floor_not_nan():
    x = np.zeros((48000 * 5, 2))
    assert integrated_loudness(x, 48000) == -70.0
    assert np.all(np.isfinite(momentary_loudness(x, 48000)))
    assert loudness_range(x, 48000) == 0.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="channel layout"):
        integrated_loudness(np.zeros((4800, 2)), 48000, "7.1.4")
    with pytest.raises(TypeError, match="floating point"):
        integrated_loudness(np.zeros(4800, dtype=np.int16), 48000)
    with pytest.raises(ValueError, match="sample rate"):
        k_weighting_coefficients(1000)
