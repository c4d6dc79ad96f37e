"""The per-stream analyzer on real sounds and on synthetic sources decoded through PyAV."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.audio.analyzer import FEATURES, AudioAnalyzer, second_features

RATE = 32000


def run(x: np.ndarray, rate: int = RATE, chunk_s: float = 0.5, start_s: float = 0.0) -> list:
    analyzer = AudioAnalyzer(rate)
    step = int(chunk_s * rate)
    records = []
    for i in range(0, x.size, step):
        records += analyzer.push(x[i : i + step].astype(np.float32), start_s + i / rate)
    return records + analyzer.flush()


def only(x: np.ndarray, rate: int = RATE) -> dict[str, float]:
    (record,) = run(x, rate)
    return record.features


def test_sine_of_peak_0_1_reads_minus20_peak_minus23_rms(audio_io):
    f = only(audio_io.sine(-20.0, 10.0, RATE))
    assert f["peak_dbfs"] == pytest.approx(-20.0, abs=0.1)
    assert f["rms_dbfs"] == pytest.approx(-23.0, abs=0.1)
    # Mono BS.1770: a 1 kHz sine at -20 dBFS peak is -23 LUFS.
    assert f["loudness_integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert f["silence_fraction"] == 0.0 and f["clipping_fraction"] == 0.0


def test_windows_follow_media_time_and_carry_tagger_none(audio_io):
    records = run(audio_io.sine(-20.0, 25.0, RATE), start_s=0.0)
    assert [r.window for r in records] == [0, 1, 2]
    assert records[2].start_s == 20.0 and records[2].end_s == pytest.approx(25.0)
    assert records[2].features["audio_coverage"] == pytest.approx(0.5)
    for r in records:
        assert r.metadata["tagger"] == "none"
        assert set(r.features) == set(FEATURES) | second_features(math.ceil(r.end_s - r.start_s - 1e-9))
        assert all(isinstance(v, float) and math.isfinite(v) for v in r.features.values())


def test_redelivered_overlap_is_dropped_and_gaps_count_against_coverage(audio_io):
    x = audio_io.sine(-20.0, 10.0, RATE).astype(np.float32)
    a = AudioAnalyzer(RATE)
    assert a.push(x[: 4 * RATE], 0.0) == []
    assert a.push(x[2 * RATE : 4 * RATE], 2.0) == []  # duplicate
    (rec,) = a.push(x[5 * RATE :], 5.0)  # one second missing
    assert rec.features["audio_coverage"] == pytest.approx(0.9)
    assert a.flush() == []


def test_loudness_jump_after_calm(audio_io):
    calm = audio_io.sine(-40.0, 30.0, RATE)
    shout = audio_io.sine(-10.0, 10.0, RATE, freq=500.0)
    records = run(np.concatenate([calm, shout]))
    assert records[1].features["loudness_jump_lu"] == pytest.approx(0.0, abs=0.5)
    assert records[3].features["loudness_jump_lu"] > 25.0


def test_silence_and_clipping_produce_no_nan():
    silent = only(np.zeros(10 * RATE))
    assert silent["silence_fraction"] == 1.0
    assert silent["loudness_momentary_max_lufs"] == -70.0
    clipped = only(np.clip(3.0 * np.sin(np.arange(10 * RATE) * 0.05), -1.0, 1.0))
    assert clipped["clipping_fraction"] > 0.3
    for f in (silent, clipped):
        assert all(math.isfinite(v) for v in f.values())


def test_bad_chunks_are_clear_errors():
    a = AudioAnalyzer(RATE)
    with pytest.raises(ValueError, match="NaN"):
        a.push(np.array([0.0, np.nan], dtype=np.float32), 0.0)
    with pytest.raises(ValueError, match="mono"):
        a.push(np.zeros((100, 2), dtype=np.float32), 0.0)
    with pytest.raises(TypeError, match="float"):
        a.push(np.zeros(100, dtype=np.int16), 0.0)
    with pytest.raises(ValueError, match="media time"):
        a.push(np.zeros(100, dtype=np.float32), -1.0)


def test_bursts_have_a_higher_onset_rate_than_speech(sounds):
    bursts = [only(sounds(n))["onset_rate_hz"] for n in ("minigun.ogg", "shotgunfire.ogg")]
    speech = [only(sounds(n))["onset_rate_hz"] for n in ("speech_front_center.wav", "speech_rear_left.wav")]
    assert min(bursts) > 2.0 * max(speech), (bursts, speech)


def test_music_is_more_harmonic_than_the_explosion(sounds):
    music = only(sounds("music_olympics.ogg")[: 10 * RATE])
    explosion = only(sounds("explosion.ogg"))
    assert music["harmonicity"] > explosion["harmonicity"] + 0.2
    assert explosion["band_ratio_low"] > music["band_ratio_low"]


def test_speech_is_harmonic_and_voice_band_heavy(sounds):
    for name in ("speech_front_center.wav", "speech_rear_left.wav"):
        f = only(sounds(name))
        assert f["harmonicity"] > 0.5
        assert f["band_ratio_low"] + f["band_ratio_mid"] > 0.8


SOURCES = {
    # name: (file rate, layout, channel data builder)
    "stereo_48k": (48000, "stereo"),
    "5.1_48k": (48000, "5.1"),
    "mono_8k": (8000, "mono"),
    "mono_48k": (48000, "mono"),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_stereo_51_48k_8k_sources_come_out_right(tmp_path, audio_io, source):
    """A 1 kHz tone of peak -20 dBFS in every channel, written and decoded by PyAV, downmixed to mono 32 kHz."""
    rate, layout = SOURCES[source]
    channels = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    tone = audio_io.sine(-20.0, 10.0, rate)
    data = np.stack([tone] * channels, axis=1)
    if layout == "5.1":
        data[:, 3] = 0.0  # LFE silent, as in a normal programme
    path = audio_io.encode_wav(tmp_path / f"{source}.wav", data, rate, layout)

    native, native_rate = audio_io.decode(path, rate=None, layout=None)
    assert native_rate == rate
    # At its own rate and layout the file reads the BS.1770 loudness its channel count implies.
    from services.audio.loudness import integrated_loudness

    weights = {"mono": (1.0,), "stereo": (1.0, 1.0), "5.1": (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)}[layout]
    expected = -23.0 + 10.0 * math.log10(sum(weights))
    assert integrated_loudness(native, rate, layout if layout != "mono" else None) == pytest.approx(expected, abs=0.1)
    # The analyzer runs at the file's own rate too.
    speakers = [i for i, w in enumerate(weights) if w > 0]  # not the LFE
    own = only(native if native.ndim == 1 else native[:, speakers].mean(axis=1), rate)
    assert own["peak_dbfs"] == pytest.approx(-20.0, abs=0.1)

    assert own["rms_dbfs"] == pytest.approx(-23.0, abs=0.1)
    assert own["loudness_integrated_lufs"] == pytest.approx(-23.0, abs=0.1)

    # As ingest delivers it: PyAV's mono downmix, resampled to 32 kHz. Resampling must not change
    # the readings against the same downmix at the file's own rate.
    mono_native, _ = audio_io.decode(path, rate=None, layout="mono")
    mono32k, _ = audio_io.decode(path, rate=RATE, layout="mono")
    ref = only(mono_native, rate)
    f = only(mono32k[: 10 * RATE])
    assert f["rms_dbfs"] == pytest.approx(ref["rms_dbfs"], abs=0.05)
    assert f["loudness_integrated_lufs"] == pytest.approx(ref["loudness_integrated_lufs"], abs=0.1)
    assert f["loudness_integrated_lufs"] == pytest.approx(f["rms_dbfs"], abs=0.15)  # 1 kHz: LUFS tracks RMS
    assert f["spectral_centroid_hz"] == pytest.approx(1000.0, abs=20.0)


def test_per_second_loudness_and_onset_find_a_burst_to_the_second(audio_io):
    quiet = audio_io.sine(-45.0, 10.0, RATE).astype(np.float32)
    loud = audio_io.sine(-10.0, 1.0, RATE).astype(np.float32)
    x = quiet.copy()
    x[6 * RATE : 7 * RATE] = loud  # a burst in second 6 of the window
    (record,) = AudioAnalyzer(sample_rate=RATE).push(x, 0.0)
    loudness = [record.features[f"loudness_s{k}"] for k in range(10)]
    onsets = [record.features[f"onset_s{k}"] for k in range(10)]
    assert int(np.argmax(loudness)) == 6 and loudness[6] - np.median(loudness) > 20
    assert int(np.argmax(onsets)) == 6 and onsets[6] > 20 and max(onsets[:6]) < 3
