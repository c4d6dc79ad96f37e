"""The health checks' measures on signals with known answers: BS.1770 loudness, black, the window summary."""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch.health.incidents import Incidents
from services.glitch.health.loudness import LoudnessMeter
from services.glitch.health.monitor import HealthConfig, StreamHealth
from services.glitch.health.picture import measure


@pytest.mark.parametrize("rate", [32000, 48000])
def test_a_full_scale_997_hz_sine_reads_minus_3_lufs(rate: int) -> None:
    t = np.arange(4 * rate) / rate
    blocks = LoudnessMeter().add(0.0, rate, np.sin(2 * np.pi * 997 * t).astype(np.float32))
    assert len(blocks) == 40 and blocks[-1].short_term_full
    assert blocks[-1].short_term_lufs == pytest.approx(-3.01, abs=0.05)  # BS.1770's calibration point
    assert blocks[-1].rms_dbfs == pytest.approx(-3.01, abs=0.01)
    quiet = LoudnessMeter().add(0.0, rate, (0.01 * np.sin(2 * np.pi * 997 * t)).astype(np.float32))
    assert quiet[-1].momentary_lufs == pytest.approx(-43.01, abs=0.05)


def test_a_stream_quiet_from_its_start_is_too_quiet_from_0_s_not_before() -> None:
    # -43 LUFS from the first sample, 12 s in 1 s chunks: the 3 s short-term window of the first
    # full block reaches back to 0 s, and the incident starts there (a take of a spectator's view
    # on ambient sound alone printed -0.0 s: the block times are sums of 0.1 s steps)
    rate, h, events = 32000, StreamHealth(), []
    t = np.arange(rate) / rate
    quiet = (0.01 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    for i in range(12):
        events += h.audio(float(i), rate, quiet, float(i), "stereo", 48000)
    starts = [e for e in events if e.phase == "start"]
    assert [e.kind for e in starts] == ["loudness"] and "too quiet" in starts[0].detail
    assert starts[0].start_s == 0.0 and str(starts[0].start_s) == "0.0"


def test_k_weighting_lifts_highs_and_cuts_lows() -> None:
    rate = 32000
    t = np.arange(4 * rate) / rate
    level = {f: LoudnessMeter().add(0.0, rate, np.sin(2 * np.pi * f * t).astype(np.float32))[-1].short_term_lufs for f in (20, 100, 997, 8000)}
    assert level[20] < level[100] < level[997] < level[8000]
    assert level[8000] - level[997] == pytest.approx(3.6, abs=0.6)  # the +4 dB shelf


def test_black_needs_nearly_every_pixel_dark() -> None:
    img = np.zeros((360, 640, 3), np.uint8)
    assert measure(img, 24).dark_ratio == 1.0
    img[:40, :100] = 255  # a lit HUD corner: 1.7 % of the picture
    assert measure(img, 24).dark_ratio < 0.99
    img[:, :100] = 255
    assert measure(img, 24).dark_ratio < HealthConfig().black_ratio


def test_black_for_half_a_second_then_back() -> None:
    h = StreamHealth(HealthConfig(no_audio_after_s=100))
    dark, lit = np.zeros((72, 128, 3), np.uint8), np.full((72, 128, 3), 120, np.uint8)
    events = []
    for i, img in enumerate([lit, dark, dark, dark, lit]):
        events += h.frame(i * 0.5, 128, 72, img)
    assert [(e.phase, e.kind, e.start_s, e.end_s, e.detected_at_s) for e in events] == [
        ("start", "black", 0.5, 1.0, 1.0), ("end", "black", 0.5, 1.5, 2.0)]


def test_window_summary_counts_seconds_per_kind() -> None:
    inc = Incidents()
    inc.raise_("black", 8.0, 9.0, 1.0, "", 0.0)
    inc.clear("black", 12.0, 12.5)
    inc.raise_("silence", 15.0, 25.0, 1.0, "", 0.0)  # still open
    inc.instant("format_change", 19.0, 0.5, "", 0.0)
    assert inc.seconds_in(0.0, 10.0) == {"black": 2.0}
    assert inc.seconds_in(10.0, 20.0) == {"black": 2.0, "silence": 5.0, "format_change": 0.0}
    assert inc.seconds_in(30.0, 40.0) == {}


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="silence_min_s"):
        HealthConfig(silence_min_s=0)
    with pytest.raises(ValueError, match="black_ratio"):
        HealthConfig(black_ratio=1.5)


@pytest.mark.parametrize("chunk_s, demux_lead, decided_at", [
    (0.25, 0.0, 6.25), (0.5, 0.0, 6.5), (1.0, 0.0, 7.0),
    (1.0, 1.0, 7.5), (0.25, 1.0, 6.75),  # MP4's bound on its interleaving, carried by the chunks
    (1.0, 0.2, 7.0), (1.0, float("nan"), 7.0), (1.0, -1.0, 7.0), (1.0, 60.0, 7.0),  # under 0.5 s, or not believed
])
def test_the_live_audio_gap_rule_allows_for_the_streams_own_chunk(chunk_s: float, demux_lead: float, decided_at: float) -> None:
    # audio (a -20 dBFS tone) in chunks of chunk_s up to 5 s, then none while video goes on in
    # 0.05 s steps: the gap is decided when video is a chunk (what ingest may still hold)
    # + the interleaving (0.5 s, or the container's larger bound) + the 0.5 s minimum past the
    # last audio, on the threshold itself
    rate, h, events = 32000, StreamHealth(), []
    n = int(chunk_s * rate)
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    for i in range(int(5.0 / chunk_s)):
        events += h.audio(i * chunk_s, rate, tone, i * chunk_s, "stereo", 48000, demux_lead)
        events += h.signals([(round((i + 1) * chunk_s - 0.05 * k, 3), False, 10.0) for k in range(int(chunk_s / 0.05), 0, -1)])
    assert events == []
    for k in range(1, 60):
        events += h.signals([(round(5.0 + 0.05 * k, 3), False, 10.0)])
    starts = [e for e in events if e.phase == "start"]
    assert [(e.kind, e.start_s) for e in starts] == [("audio_gap", 5.0)]
    assert starts[0].detected_at_s == pytest.approx(decided_at)
