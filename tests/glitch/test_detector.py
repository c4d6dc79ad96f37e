"""The debouncer: classifier scores and decoder evidence become one START and one END per incident."""

from __future__ import annotations

import numpy as np
import pytest

from services.glitch.classifier import FrameScore
from services.glitch.detector import DetectorConfig, Signal, StreamDetector

RGB = np.full((72, 128, 3), 90, np.uint8)
FPS = 25


def score(p: float, kind: str = "stripes") -> FrameScore:
    return FrameScore(p, kind, np.array([p]))


def feed(det: StreamDetector, scores: dict[float, float], seconds: float, kind: str = "stripes", signals: dict[int, Signal] | None = None,
         errors_at: tuple[int, ...] = (), scorer=score) -> list:
    """2 fps samples with the given scores (others 0.02), signals for every 25 fps frame in 1 s batches."""
    events = []
    signals = signals or {}
    for second in range(int(seconds)):
        for half in (0.0, 0.5):
            t = second + half
            det.add_frame(t, scorer(scores.get(t, 0.02), kind), RGB)
        batch = [signals.get(n, Signal(n / FPS, keyframe=n % 50 == 0)) for n in range(second * FPS, (second + 1) * FPS)]
        events += det.add_signals(batch, decode_errors=int(second in errors_at)) or []
        events += det.advance()
    return events + det.finish()


def phases(events) -> list[tuple[str, str]]:
    return [(e.phase, e.kind) for e in events]


def test_one_incident_opens_and_closes_once() -> None:
    events = feed(StreamDetector(), {4.0: 0.97, 4.5: 0.99, 5.0: 0.95}, 10)
    assert phases(events) == [("start", "stripes"), ("end", "stripes")]
    start, end = events
    assert start.start_s == 4.0 and end.end_s == 5.0
    assert start.incident == end.incident == 0
    assert start.thumbnail_jpeg[:2] == b"\xff\xd8" and end.thumbnail_jpeg[:2] == b"\xff\xd8"
    assert end.confidence == pytest.approx(0.99) and 0.9 < end.severity <= 1.0


def test_a_flicker_inside_an_incident_does_not_split_it_and_two_apart_are_two() -> None:
    scores = {2.0: 0.95, 2.5: 0.1, 3.0: 0.96, 8.0: 0.99, 8.5: 0.99}
    events = feed(StreamDetector(), scores, 12)
    assert [e.phase for e in events] == ["start", "end", "start", "end"]
    assert [e.incident for e in events] == [0, 0, 1, 1]
    assert events[1].end_s == 3.0 and events[2].start_s == 8.0


def test_low_scores_raise_nothing_but_suspect_frames_after_a_gap_do() -> None:
    assert feed(StreamDetector(), {3.0: 0.7, 3.5: 0.7}, 8) == []
    gap = {74: Signal(74 / FPS, frames_missing=2)}  # a dropped packet before 2.96 s: no decoder error
    events = feed(StreamDetector(), {3.0: 0.7, 3.5: 0.7}, 8, kind="macroblocking", signals=gap)
    assert phases(events) == [("start", "macroblocking"), ("end", "macroblocking")]
    # the suspicion ends at the next keyframe (4.0 s)
    assert feed(StreamDetector(), {5.0: 0.7}, 8, signals=gap) == []


def test_decoder_errors_alone_open_a_decode_error_incident() -> None:
    corrupt = {n: Signal(n / FPS, is_corrupt=True) for n in range(100, 106)}
    events = feed(StreamDetector(), {}, 8, signals=corrupt)
    assert phases(events) == [("start", "decode_error"), ("end", "decode_error")]
    assert events[0].start_s == pytest.approx(4.0)
    events = feed(StreamDetector(), {}, 8, errors_at=(5,))
    assert phases(events) == [("start", "decode_error"), ("end", "decode_error")]


def test_classifier_kind_wins_over_the_decoder_flag() -> None:
    corrupt = {n: Signal(n / FPS, is_corrupt=True) for n in range(100, 106)}
    events = feed(StreamDetector(), {4.0: 0.98, 4.5: 0.97}, 8, kind="macroblocking", signals=corrupt)
    assert phases(events) == [("start", "macroblocking"), ("end", "macroblocking")]


def test_freeze_needs_a_long_enough_run() -> None:
    frozen = {n: Signal(n / FPS, frozen=True) for n in range(50, 50 + 4 * FPS)}  # 2..6 s
    events = feed(StreamDetector(DetectorConfig(freeze_min_s=3.0)), {}, 10, signals=frozen)
    assert phases(events) == [("start", "freeze"), ("end", "freeze")]
    assert events[0].start_s == pytest.approx(2.0, abs=0.05) and events[1].end_s >= 5.5
    short = {n: Signal(n / FPS, frozen=True) for n in range(50, 50 + 2 * FPS)}
    assert feed(StreamDetector(DetectorConfig(freeze_min_s=3.0)), {}, 10, signals=short) == []


def test_long_incident_sends_updates_and_finish_closes_it() -> None:
    scores = {t / 2: 0.99 for t in range(4, 60)}
    events = feed(StreamDetector(DetectorConfig(update_every_s=10.0)), scores, 30)
    assert [e.phase for e in events] == ["start", "update", "update", "end"]
    assert [e.update for e in events] == [0, 1, 2, 0]
    assert events[-1].end_s == 29.5  # still open at the stream's end: closed by finish()


def test_samples_wait_for_the_decoder_evidence_of_their_time() -> None:
    det = StreamDetector()
    det.add_frame(1.0, score(0.99), RGB)
    assert det.advance() == [], "no signals yet: the frame is not judged"
    det.add_signals([Signal(n / FPS) for n in range(0, 30)])
    assert [e.phase for e in det.advance()] == ["start"]
    assert det.open_incident


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="suspect_score"):
        DetectorConfig(open_score=0.5, suspect_score=0.8)
    with pytest.raises(ValueError):
        DetectorConfig(close_after_s=0)
    with pytest.raises(ValueError, match="standalone_kinds"):
        DetectorConfig(standalone_kinds=("stripes", "sparkles"))


@pytest.mark.parametrize("check", ["sheared", "chroma_shifted"])
def test_a_model_free_stripes_check_opens_an_incident_under_the_open_score(check) -> None:
    # the row-shear (wrong width) and chroma-registration (wrong height) checks, shear.py and chroma.py
    def flagged(p: float, kind: str = "stripes") -> FrameScore:
        return FrameScore(p, kind, np.array([p]), {"stripes": p}, (), **{check: p > 0.5})

    assert feed(StreamDetector(), {3.0: 0.7, 3.5: 0.7}, 8) == []  # 0.7 alone is under the open score
    events = feed(StreamDetector(), {3.0: 0.7, 3.5: 0.7}, 8, scorer=flagged)
    assert [(e.phase, e.kind, e.start_s, e.end_s) for e in events] == [("start", "stripes", 3.0, 3.0), ("end", "stripes", 3.0, 3.5)]
