"""Moments at 1 s (services/fusion/moments.py through the HighlightTracker): one highlight per
moment, bounds to the second, chat's late reaction credited to the moment it follows, glitches."""

from __future__ import annotations

import numpy as np
import pytest

from services.fusion.highlights import NO_CHAT_WAIT_S, HighlightConfig, HighlightTracker, ScoredWindow
from services.fusion.moments import MomentConfig, Series, find

RNG_SEED = 7


def stream(duration: int, moments: list[tuple[int, int]], chat: list[tuple[int, int]] = (), sound_only: list[int] = (),
           seed: int = RNG_SEED) -> dict[str, np.ndarray]:
    """Per-second signals: a quiet background; each moment (start, end) a loud onset at its start and fast
    motion throughout; each chat burst (start, length) 7 messages/s; each sound_only second a loud sound."""
    rng = np.random.default_rng(seed)
    s = {
        "loudness": -40.0 + rng.normal(0, 1.0, duration),
        "onset": np.abs(rng.normal(0.5, 0.4, duration)),
        "motion": np.abs(rng.normal(0.4, 0.1, duration)),
        "chat": rng.poisson(1.0, duration).astype(float),
    }
    for a, b in moments:
        s["loudness"][a] = -12.0
        s["loudness"][a + 1 : b] = -25.0
        s["onset"][a] = 25.0
        s["motion"][a:b] = 6.0 + rng.normal(0, 0.3, b - a)
    for a, n in chat:
        s["chat"][a : a + n] = 7.0
    for t in sound_only:
        s["loudness"][t] = -12.0
        s["onset"][t] = 25.0
    return s


def windows(signals: dict[str, np.ndarray], scores: list[float], with_chat: bool = True) -> list[ScoredWindow]:
    out = []
    names = {"loudness": "audio.loudness_s", "onset": "audio.onset_s", "motion": "vision.motion_s", "chat": "chat.chat_messages_s"}
    for i, score in enumerate(scores):
        features = {f"{names[k]}{j}": float(v[10 * i + j]) for k, v in signals.items() if with_chat or k != "chat"
                    for j in range(10) if 10 * i + j < len(v)}
        out.append(ScoredWindow(i, 10.0 * i, 10.0 * i + 10, score, (), (), features))
    return out


def run(scored: list[ScoredWindow], config: HighlightConfig | None = None, live: bool = False, glitches=()):
    tracker = HighlightTracker(config or HighlightConfig(), live=live)
    for g in glitches:
        tracker.glitch(*g)
    out = []
    for w in scored:
        out += tracker.add(w)
    return out + tracker.finish(), tracker


def test_two_moments_20_s_apart_give_two_highlights_each_with_its_own_clip():
    sig = stream(60, [(12, 17), (32, 37)], chat=[(16, 6), (36, 6)])
    spans, _ = run(windows(sig, [0.1, 0.9, 0.7, 0.9, 0.6, 0.1]))
    assert [(s.start_s, s.end_s) for s in spans] == [(12.0, 17.0), (32.0, 37.0)]
    assert all(s.resolution == "moment" and "chat spike" in s.reason and s.chat_lag_s == 4.0 for s in spans)
    config = HighlightConfig()
    clips = [s.clip_range(config) for s in spans]
    assert clips == [(9.0, 19.0), (29.0, 39.0)]  # lead-in 3 s, tail 2 s: never one clip for both
    assert sorted(s.rank for s in spans) == [1, 2] or [s.rank for s in spans] == [1, 1]


def test_the_window_rule_merged_those_two_moments():
    """The rule for records without 1 s values (the former one) makes one highlight of both."""
    sig = stream(60, [(12, 17), (32, 37)], chat=[(16, 6), (36, 6)])
    plain = [ScoredWindow(w.window, w.start_s, w.end_s, w.score) for w in windows(sig, [0.1, 0.9, 0.7, 0.9, 0.6, 0.1])]
    spans, _ = run(plain)
    assert [(s.start_s, s.end_s, s.resolution) for s in spans] == [(10.0, 50.0, "windows")]


def test_a_moment_across_a_window_edge_is_one_highlight_within_3_s():
    sig = stream(40, [(8, 13)], chat=[(14, 6)])
    spans, _ = run(windows(sig, [0.8, 0.8, 0.2, 0.1]))
    assert len(spans) == 1
    s = spans[0]
    assert abs(s.start_s - 8) <= 3 and abs(s.end_s - 13) <= 3 and s.windows == (0, 1)


def test_a_chat_burst_6_s_after_an_audio_peak_lifts_that_moment_not_the_next():
    # the moment at 5 s: its window alone scores low; chat's burst at 11 s makes window 1 score high
    sig = stream(40, [(5, 8)], chat=[(11, 6)])
    spans, _ = run(windows(sig, [0.3, 0.8, 0.1, 0.1]))
    assert len(spans) == 1
    s = spans[0]
    assert s.peak_s == 5.0 and s.start_s <= 5 < s.end_s <= 10
    assert s.chat_lag_s == 6.0 and s.score == 0.8 and s.windows == (0, 1)
    assert "chat spike" in s.reason and "6 s later" in s.reason


def test_a_chat_burst_alone_a_sound_alone_or_motion_alone_is_no_moment():
    sig = stream(50, [], chat=[(5, 6)], sound_only=[25])
    sig["motion"][40:46] = 6.0  # a camera pan: motion only
    spans, _ = run(windows(sig, [0.9, 0.9, 0.9, 0.9, 0.9]))
    assert spans == []


def test_one_burst_lifts_one_moment():
    series = Series()
    sig = stream(40, [(5, 8), (12, 14)], chat=[(17, 5)])
    for w in windows(sig, [0.9] * 4):
        series.add(w.start_s, w.features)
    moments = find(series, 0, 40, lambda t: 0.9, 0.5, MomentConfig())
    with_chat = [m for m in moments if "chat" in m.cues]
    assert len(moments) == 2 and len(with_chat) == 1


def test_a_glitch_window_is_not_a_highlight_by_default_and_marked_when_asked():
    sig = stream(40, [(12, 17)], chat=[(16, 6)])
    scored = windows(sig, [0.1, 0.9, 0.7, 0.1])
    spans, tracker = run(scored, glitches=[(11.0, 15.5)])
    assert spans == [] and tracker.suppressed == 1
    marked, _ = run(scored, HighlightConfig(glitch_policy="mark"), glitches=[(11.0, 15.5)])
    assert len(marked) == 1 and marked[0].glitch
    clean, _ = run(scored, glitches=[(25.0, 27.0)])  # a glitch elsewhere changes nothing
    assert len(clean) == 1 and not clean[0].glitch


def test_live_waits_at_most_the_live_wait_and_reports_it():
    sig = stream(60, [(12, 17)], chat=[(16, 6)])
    scored = windows(sig, [0.1, 0.9, 0.7, 0.1, 0.1, 0.1])
    config = HighlightConfig(live_wait_s=6.0)
    tracker = HighlightTracker(config, live=True)
    decided_at = None
    for w in scored:
        if tracker.add(w):
            decided_at = w.end_s
            break
    assert decided_at == 20.0  # the data 6 s past the peak (12 + 6 = 18) is in with window 1
    assert tracker.wait_s == 6.0 and HighlightTracker(config).wait_s == config.moments.chat_lag_max_s + 3.0
    spans, _ = run(scored, config, live=True)
    assert spans[0].wait_s == 6.0 and spans[0].latency_s == pytest.approx(3.0)  # decided with window 1 (data to 20 s), the moment ended at 17


def test_a_live_stream_without_chat_does_not_wait_for_a_reaction():
    sig = stream(60, [(12, 17)])
    scored = windows(sig, [0.1, 0.9, 0.7, 0.1, 0.1, 0.1])
    config = HighlightConfig(live_wait_s=10.0)
    without_chat = HighlightTracker(config, live=True, chat=False)
    assert without_chat.wait_s == NO_CHAT_WAIT_S < HighlightTracker(config, live=True).wait_s == 10.0
    assert HighlightTracker(config, chat=False).wait_s == HighlightTracker(config).wait_s  # a file: unchanged
    decided = {}
    for name, tracker in (("chat", HighlightTracker(config, live=True)), ("none", without_chat)):
        for w in scored:
            if tracker.add(w):
                decided[name] = w.end_s
                break
    assert decided == {"chat": 30.0, "none": 20.0}  # the peak's 10 s wait needs window 2; 3 s are in with window 1


def test_ranks_follow_scores_and_decisions_do_not_depend_on_scoring_order():
    sig = stream(80, [(12, 17), (42, 47)], chat=[(16, 6), (46, 6)])
    scored = windows(sig, [0.1, 0.7, 0.6, 0.1, 0.95, 0.8, 0.1, 0.1])
    spans, _ = run(scored)
    assert [s.rank for s in spans] == [1, 1]  # the second beat the first when it came
    tracker = HighlightTracker(HighlightConfig())
    shuffled = []
    for k in [3, 0, 7, 2, 1, 6, 5, 4]:
        shuffled += tracker.add(scored[k])
    shuffled += tracker.finish()
    assert [(s.number, s.start_s, s.end_s) for s in shuffled] == [(s.number, s.start_s, s.end_s) for s in spans]


def test_clip_length_stays_within_the_settings():
    sig = stream(60, [(20, 22)], chat=[(24, 5)])
    spans, _ = run(windows(sig, [0.1, 0.1, 0.9, 0.5, 0.1, 0.1]))
    start, end = spans[0].clip_range(HighlightConfig(min_clip_s=12.0, lead_in_s=1.0, tail_s=1.0))
    assert end - start == pytest.approx(12.0) and start < 20 and end > 22
    start, end = spans[0].clip_range(HighlightConfig(max_clip_s=3.0, min_clip_s=2.0))
    assert end - start == pytest.approx(3.0)


def test_the_evaluation_counts_moments_boundaries_and_distractors_and_estimates_the_lag():
    from training.fusion import evaluate

    sig = stream(90, [(12, 17), (42, 47), (70, 74)], chat=[(18, 6), (48, 6), (76, 6)])
    rows = {("s", w.window): {"start_s": w.start_s, "end_s": w.end_s, "features": dict(w.features), "modalities": {"audio", "vision", "chat"}}
            for w in windows(sig, [0.5] * 9)}
    lag = evaluate.estimate_chat_lag(rows)
    assert lag["peaks_with_a_reaction"] == 3 and lag["median_s"] == 6.0
    plan = {"stream": "s", "lags": {}, "moments": [{"start": 12.2, "end": 17.0, "kind": "highlight"}, {"start": 42.0, "end": 47.5, "kind": "highlight"},
                                                   {"start": 55.0, "end": 60.0, "kind": "decoy_music"}]}
    spans, _ = run(windows(sig, [0.1, 0.9, 0.7, 0.1, 0.9, 0.6, 0.1, 0.9, 0.6]))
    spans.append(spans[0].__class__(9, (5,), 56.0, 58.0, 0.7, spans[0].best, ()))  # a highlight on the distractor
    m = evaluate.moment_metrics({"s": spans}, [plan])
    assert (m["highlights"], m["moments"], m["matched"], m["distractors_reported"]) == (4, 2, 2, 1)
    assert m["precision"] == 0.5 and m["recall"] == 1.0
    assert m["boundary_error_median_s"] == pytest.approx(0.1)  # median of |12-12.2|, |17-17|, |42-42|, |47-47.5|


def test_a_camera_pan_before_a_moment_does_not_take_the_moments_chat():
    """The demo sample's case: a pan at 25-31 s (motion only), a moment at 40 s whose chat burst
    starts at 42 s, 11 s after the pan's last second: the burst belongs to the moment."""
    sig = stream(60, [(40, 47)], chat=[(42, 6)])
    sig["motion"][25:32] = 30.0
    spans, _ = run(windows(sig, [0.1, 0.1, 0.1, 0.2, 1.0, 0.1]))
    assert [(s.start_s, s.end_s) for s in spans] == [(40.0, 47.0)]
    assert "chat spike" in spans[0].reason
