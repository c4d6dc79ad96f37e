"""Joining modalities per window, deadlines and stream end; highlight runs and NMS."""

from __future__ import annotations

import pytest

from services.fusion.highlights import HighlightConfig, HighlightTracker, ScoredWindow
from services.fusion.join import JoinConfig, Part, StreamJoin


def part(modality: str, window: int, **values: float) -> Part:
    return Part(modality, window, 10.0 * window, 10.0 * window + 10.0, values or {"x": 1.0})


def test_scores_once_when_every_expected_modality_is_in_and_ignores_duplicates():
    join = StreamJoin("s", JoinConfig(chat_wait_s=0))
    assert join.add(part("vision", 0)) == []
    assert join.add(part("vision", 0)) == []  # a redelivery
    ready = join.add(part("audio", 0, loud=3.0))
    assert [r.window for r in ready] == [0] and ready[0].missing == [] and ready[0].reason == "complete"
    assert ready[0].features() == {"audio.loud": 3.0, "vision.x": 1.0}
    assert join.add(part("audio", 0)) == [] and join.add(part("vision", 0)) == []
    assert join.duplicates == 1 and join.late == 2


def test_chat_becomes_expected_once_the_stream_has_chat():
    join = StreamJoin("s", JoinConfig(chat_wait_s=0))
    join.add(part("chat", 0))
    join.add(part("vision", 0))
    assert join.add(part("audio", 0))[0].parts.keys() == {"vision", "audio", "chat"}
    join.add(part("vision", 1))
    assert join.add(part("audio", 1)) == []  # waits for window 1's chat
    assert [r.window for r in join.add(part("chat", 1))] == [1]


def test_a_complete_window_waits_a_little_for_a_first_chat_record():
    join = StreamJoin("s", JoinConfig(chat_wait_s=20))
    join.add(part("vision", 0))
    assert join.add(part("audio", 0)) == []
    assert join.media_window(1, 10, 20) == []  # clock 20 < 10 + 20
    ready = join.media_window(2, 20, 30)
    assert [r.window for r in ready] == [0] and ready[0].missing == []


def test_live_deadline_scores_with_the_missing_modality_flagged():
    join = StreamJoin("s", JoinConfig(deadline_s=15, chat_wait_s=0), live=True)
    join.add(part("vision", 0))
    assert join.media_window(0, 0, 10) == [] and join.media_window(1, 10, 20) == []
    ready = join.media_window(2, 20, 30)  # clock 30 >= 10 + 15
    assert [r.window for r in ready] == [0]
    assert ready[0].missing == ["audio"] and ready[0].reason == "deadline"
    assert join.add(part("audio", 0)) == [] and join.late == 1  # too late: never scored twice


def test_files_wait_longer_but_a_modality_that_moved_on_counts_as_lost():
    join = StreamJoin("s", JoinConfig(vod_deadline_s=0, chat_wait_s=0))
    join.add(part("vision", 0))
    for i in range(1, 5):
        join.media_window(i, 10 * i, 10 * i + 10)
    assert join.open_windows  # no deadline for files
    join.add(part("audio", 1))
    ready = join.add(part("audio", 2))  # audio is two windows past 0: its window 0 is lost
    assert [(r.window, r.missing, r.reason) for r in ready] == [(0, ["audio"], "moved_on")]


def test_stream_end_scores_every_window_even_ones_nobody_reported():
    join = StreamJoin("s", JoinConfig(chat_wait_s=0, end_timeout_s=30))
    for i in range(3):
        join.media_window(i, 10 * i, 10 * i + 10)
    join.add(part("vision", 0))
    join.add(part("audio", 0))
    join.add(part("vision", 2))
    ready = join.media_window(3, 30, 34.5, last=True) + join.end(34.5, now=100.0)
    assert ready == []  # audio has not reached the last window: wait
    assert join.expire(now=110.0) == []
    join.touch(now=125.0)  # an analyser still delivers: the stream stays open
    assert join.expire(now=150.0) == []
    ready = join.expire(now=156.0)
    assert [(r.window, r.missing) for r in ready] == [(1, ["audio", "vision"]), (2, ["audio"]), (3, ["audio", "vision"])]
    assert ready[-1].end_s == 34.5 and join.finished


def test_stream_end_does_not_wait_for_modalities_that_finished():
    join = StreamJoin("s", JoinConfig(chat_wait_s=0))
    join.add(part("vision", 0))
    join.add(part("audio", 0))
    join.add(part("audio", 1))
    join.media_window(1, 10, 15, last=True)
    ready = join.end(15.0, now=0.0)
    assert ready == []  # vision may still send window 1
    ready = join.add(part("vision", 1))
    assert [r.window for r in ready] == [1] and join.finished


def test_join_rejects_bad_input():
    join = StreamJoin("s")
    with pytest.raises(ValueError, match="modality"):
        join.add(Part("smell", 0, 0, 10, {}))
    with pytest.raises(ValueError, match="window"):
        join.add(Part("audio", -1, 0, 10, {}))
    with pytest.raises(ValueError, match="subset"):
        JoinConfig(expected=frozenset({"smell"}))


def _run(scores, order=None, **config):
    tracker = HighlightTracker(HighlightConfig(**config))
    out = []
    for i in order or range(len(scores)):
        out += tracker.add(ScoredWindow(i, 10.0 * i, 10.0 * i + 10, scores[i], why=(f"w{i}",)))
    return out + tracker.finish()


def test_a_run_of_high_windows_becomes_one_highlight():
    spans = _run([0.1, 0.7, 0.9, 0.8, 0.2, 0.1, 0.1, 0.6, 0.1])
    assert [(s.number, s.windows, s.start_s, s.end_s) for s in spans] == [(0, (1, 2, 3), 10.0, 40.0), (1, (7,), 70.0, 80.0)]
    assert spans[0].score == 0.9 and spans[0].best.why == ("w2",)


def test_one_low_window_inside_a_run_does_not_split_it_but_two_do():
    assert [s.windows for s in _run([0.8, 0.3, 0.8])] == [(0, 1, 2)]
    assert [s.windows for s in _run([0.8, 0.3, 0.3, 0.8])] == [(0,), (3,)]
    assert [s.windows for s in _run([0.8, 0.3, 0.3, 0.8], merge_gap=2)] == [(0, 1, 2, 3)]


def test_nms_cuts_a_long_run_around_its_peaks():
    scores = [0.6, 0.7, 0.9, 0.7, 0.6, 0.65, 0.95, 0.6]
    spans = _run(scores, max_windows=3)
    assert all(len(s.windows) <= 3 for s in spans)
    covered = [w for s in spans for w in s.windows]
    assert sorted(covered) == list(range(8)) and len(covered) == len(set(covered))
    peaks = sorted(s.best.window for s in spans)
    assert 2 in peaks and 6 in peaks


def test_decisions_do_not_depend_on_the_scoring_order():
    scores = [0.1, 0.7, 0.9, 0.2, 0.1, 0.1, 0.6, 0.6, 0.1]
    in_order = [(s.number, s.windows) for s in _run(scores)]
    shuffled = [(s.number, s.windows) for s in _run(scores, order=[3, 0, 8, 2, 1, 6, 5, 7, 4])]
    assert in_order == shuffled == [(0, (1, 2)), (1, (6, 7))]


def test_clip_range_has_lead_in_and_stays_inside_the_media():
    span = _run([0.1, 0.9, 0.1])[0]
    config = HighlightConfig(lead_in_s=3, tail_s=2)
    assert span.clip_range(config) == (7.0, 22.0)
    assert span.clip_range(config, media_end=21.0) == (7.0, 21.0)
    assert _run([0.9, 0.1])[0].clip_range(config) == (0.0, 12.0)
