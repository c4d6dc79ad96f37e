"""Joining modalities per window by progress (stages that moved on, finished or stalled; live deadlines), input bounds; highlight runs and NMS."""

from __future__ import annotations

import pytest

from services.fusion.highlights import HighlightConfig, HighlightTracker, ScoredWindow
from services.fusion.join import JoinConfig, OutOfRange, Part, StreamJoin


def part(modality: str, window: int, end: float | None = None, **values: float) -> Part:
    return Part(modality, window, 10.0 * window, 10.0 * window + 10.0 if end is None else end, values or {"x": 1.0})


def started(config: JoinConfig | None = None, live: bool = False, duration_s: float = 0.0, chat: bool = False) -> StreamJoin:
    """A join whose stream's start is known (ingest's "started", and the declaration before it)."""
    join = StreamJoin("s", config or JoinConfig(), first_seen=0.0)
    join.declare({"vision", "audio"} | ({"chat"} if chat else set()))
    join.start(live=live, duration_s=duration_s, start_wall=1000.0)
    return join


def test_scores_once_when_every_expected_modality_is_in_and_ignores_duplicates():
    join = started()
    assert join.add(part("vision", 0), now=1) == []
    assert join.add(part("vision", 0), now=1) == []  # a redelivery
    ready = join.add(part("audio", 0, loud=3.0), now=1)
    assert [r.window for r in ready] == [0] and ready[0].missing == [] and ready[0].reason == "complete"
    assert ready[0].features() == {"audio.loud": 3.0, "vision.x": 1.0}
    assert join.add(part("audio", 0), now=1) == [] and join.add(part("vision", 0), now=1) == []
    assert join.duplicates == 1 and join.late == 2


def test_a_stream_declared_with_chat_waits_for_its_chat_records():
    join = started(chat=True)
    join.add(part("vision", 0), now=1)
    assert join.add(part("audio", 0), now=1) == []  # chat was declared at the start: it is expected
    assert [r.window for r in join.add(part("chat", 0), now=1)] == [0]


def test_before_the_start_is_known_a_window_complete_without_chat_waits():
    join = StreamJoin("s", first_seen=0.0)
    join.add(part("vision", 0), now=1)
    assert join.add(part("audio", 0), now=1) == []  # chat may be declared: not known yet
    join.start(live=False, duration_s=60.0, start_wall=1000.0)  # started without a chat declaration
    ready = join.ready(now=2)
    assert [(r.window, r.missing, r.reason) for r in ready] == [(0, [], "complete")]
    join.add(part("chat", 1), now=3)  # chat came anyway: expected from now on
    join.add(part("vision", 1), now=3)
    assert join.add(part("audio", 1), now=3)[0].parts.keys() == {"vision", "audio", "chat"}


def test_a_lagging_stage_keeps_a_file_window_open_however_far_ahead_the_media_is():
    join = started(duration_s=3600.0)
    join.add(part("audio", 0), now=1)
    for i in range(30):
        join.media_window(i, 10 * i, 10 * i + 10, now=1)
    assert join.ready(now=500) == [] and 0 in join.open_windows  # no deadline for files, no wall clock while under the stall timeout
    assert [(r.window, r.reason) for r in join.add(part("vision", 0), now=501)] == [(0, "complete")]


def test_a_stage_that_moved_past_a_window_cannot_deliver_it():
    join = started()
    join.add(part("vision", 0), now=1)
    join.add(part("audio", 1), now=1)
    ready = join.add(part("audio", 2), now=1)  # audio is two windows past 0: its window 0 is lost
    assert [(r.window, r.missing, r.reason) for r in ready] == [(0, ["audio"], "moved_on")]


def test_a_stage_that_said_it_is_done_is_not_waited_for():
    join = started(chat=True)
    join.add(part("vision", 0), now=1)
    join.add(part("audio", 0), now=1)
    assert join.ready(now=2) == []
    join.stage_done("chat")  # chat failed: it delivers nothing more
    assert [(r.window, r.missing, r.reason) for r in join.ready(now=2)] == [(0, ["chat"], "stage_done")]


def test_live_deadline_scores_with_the_missing_modality_flagged():
    join = started(JoinConfig(deadline_s=15), live=True)
    join.add(part("vision", 0), now=1)
    assert join.media_window(0, 0, 10, now=1) == [] and join.media_window(1, 10, 20, now=1) == []
    ready = join.media_window(2, 20, 30, now=1)  # clock 30 >= 10 + 15
    assert [r.window for r in ready] == [0]
    assert ready[0].missing == ["audio"] and ready[0].reason == "deadline"
    assert join.add(part("audio", 0), now=1) == [] and join.late == 1  # too late: never scored twice


def test_stream_end_scores_what_the_stages_finished_and_waits_for_the_others():
    join = started()
    for i in range(3):
        join.media_window(i, 10 * i, 10 * i + 10, now=1)
    join.add(part("vision", 0), now=1)
    assert [r.window for r in join.add(part("audio", 0), now=1)] == [0]
    join.add(part("vision", 2), now=1)
    ready = join.media_window(3, 30, 34.5, last=True, now=1) + join.end(34.5, now=1)
    assert ready == []  # no stage has reached the last window: wait
    assert join.ready(now=300) == []  # no wall-clock end timeout
    join.add(part("vision", 3, end=34.5), now=301)
    ready = join.add(part("audio", 3), now=301)  # both finished the stream: what they skipped is lost
    assert [(r.window, r.missing, r.reason) for r in ready] == [
        (1, ["audio", "vision"], "moved_on"), (2, ["audio"], "stage_done"), (3, [], "complete")]
    assert ready[-1].end_s == 34.5 and join.finished


def test_a_stage_that_delivers_nothing_is_given_up_after_the_stall_timeout():
    join = started(JoinConfig(stall_timeout_s=300))
    join.add(part("vision", 0), now=10)
    join.add(part("vision", 1), now=250)
    assert not join.stall_due(299) and join.ready(now=299) == []
    assert join.stall_due(300)  # audio: nothing for this stream since it was first seen (0)
    ready = join.ready(now=300)
    assert [(r.window, r.missing, r.reason) for r in ready] == [(0, ["audio"], "stage_stalled"), (1, ["audio"], "stage_stalled")]
    assert join.silent_for("audio", 300) == 300 and join.silent_for("vision", 300) == 50


def test_window_indexes_are_bounded_by_the_known_range():
    config = JoinConfig(max_ahead=30)
    fresh = StreamJoin("s", config)
    fresh.check_index(29, wall_now=0)
    with pytest.raises(OutOfRange, match="outside"):
        fresh.check_index(30, wall_now=0)  # a stream never seen: its first windows only
    file = started(config, duration_s=95.0)
    for i in range(12):
        file.media_window(i, 10 * i, 10 * i + 10, now=1)
    file.check_index(11, wall_now=0)  # ceil(95 / 10) + 1
    with pytest.raises(OutOfRange):
        file.check_index(12, wall_now=0)
    early = started(config, duration_s=3600.0)
    early.check_index(361, wall_now=0, relative=False)  # a terminal status may run ahead of the window records
    with pytest.raises(OutOfRange):
        early.check_index(362, wall_now=0, relative=False)
    with pytest.raises(OutOfRange):
        early.check_index(30, wall_now=0)  # a record may not
    live = started(config, live=True)  # started at wall 1000
    live.media_window(0, 0, 10, now=1)
    live.check_index(30, wall_now=1000)
    with pytest.raises(OutOfRange):
        live.check_index(31, wall_now=1000)  # more than max_ahead past the highest seen
    for i in range(1, 31):
        live.media_window(i, 10 * i, 10 * i + 10, now=1)
    with pytest.raises(OutOfRange):
        live.check_index(32, wall_now=1010)  # past what 10 s of wall clock allows
    live.check_index(32, wall_now=1030)
    for bad in (20000, 3_000_000, -1):
        with pytest.raises(OutOfRange):
            live.check_index(bad, wall_now=1030)


def test_a_forged_end_time_does_not_move_the_media_clock_past_every_deadline():
    join = started(live=True)
    join.add(part("vision", 0), now=1)
    assert join.media_window(1, 10, 1e9, now=1) == [] and join.clock == 21.0


def test_the_stream_facts_survive_a_round_trip_through_meta():
    join = started(JoinConfig(max_ahead=5), duration_s=95.0, chat=True)
    join.media_window(0, 0, 10, now=1)
    join.add(part("audio", 2), now=1)
    join.stage_done("chat")
    join.end(25.0, now=1)
    back = StreamJoin.from_meta("s", JoinConfig(max_ahead=5), join.to_meta())
    assert back.to_meta() == join.to_meta()
    assert back.expected == {"vision", "audio", "chat"} and back.limit(0) == 7 and back.last_window == 2


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
