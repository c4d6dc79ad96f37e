"""Window bookkeeping of StreamAnalyzer: closing rules, gaps, duplicates, bad input, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.vision.analyzer import AnalyzerConfig, StreamAnalyzer, process_streams


@pytest.fixture(scope="module")
def clip(vtest_gray):
    return vtest_gray[0][::2]  # 5 fps


@pytest.fixture(scope="module")
def rgb(shared_data, decode_media):
    frames, _ = decode_media(shared_data / "media" / "bigbuckbunny.mp4", size=(224, 224), fmt="rgb24")
    return frames[::25]


def test_windows_close_as_time_passes(models, clip, rgb):
    a = StreamAnalyzer(models)
    finished = []
    for i in range(125):  # 25 s at 5 fps
        t = i / 5
        finished += a.add_flow_frame(clip[i], t)
        if i % 5 == 0:
            finished += a.add_cnn_frame(rgb[(i // 5) % len(rgb)], t)
    assert [w.window for w in finished] == [0, 1]
    rest = a.flush()
    assert [w.window for w in rest] == [2]
    w0 = finished[0].features
    assert (w0["flow_frames"], w0["flow_pairs"], w0["cnn_frames"]) == (50, 49, 10)
    assert finished[1].features["flow_pairs"] == 50  # the pair across the boundary counts for window 1
    assert finished[1].start_s == 10.0 and finished[1].end_s == 20.0
    assert finished[0].features["novelty_max"] > 0


def test_stream_without_cnn_frames_still_closes_windows(models, clip):
    a = StreamAnalyzer(models)
    got = []
    for i in range(61):  # up to 12 s: past the end of window 0 plus the grace
        got += a.add_flow_frame(clip[i], i / 5)
    assert [w.window for w in got] == [0]
    assert got[0].features["cnn_frames"] == 0 and got[0].features["novelty_mean"] == 0


def test_gap_emits_empty_windows_and_duplicates_are_dropped(models, clip):
    a = StreamAnalyzer(models)
    for i in range(5):
        a.submit_flow_frame(clip[i], i / 5)
    a.submit_flow_frame(clip[4], 0.8)  # redelivered duplicate
    for i in range(5):
        a.submit_flow_frame(clip[10 + i], 35 + i / 5)
    windows = a.flush()
    assert [w.window for w in windows] == [0, 1, 2, 3]
    assert windows[1].features["flow_frames"] == 0 and windows[2].features["flow_pairs"] == 0
    assert windows[3].features["flow_pairs"] == 4  # no pair across the 34 s gap
    assert a.dropped_frames == 1
    a.submit_flow_frame(clip[0], 5.0)  # belongs to a finished window
    assert a.dropped_frames == 2


def test_batched_streams_equal_separate_streams(models, clip, bbb_gray):
    small = bbb_gray[0][::5]
    a, b = StreamAnalyzer(models, stream_id="a"), StreamAnalyzer(models, stream_id="b")
    for i in range(20):
        a.submit_flow_frame(clip[i], i / 5)
        b.submit_flow_frame(small[i], i / 5)
    process_streams([a, b], models)
    fa, fb = a.flush()[0].features, b.flush()[0].features
    sa = StreamAnalyzer(models)
    for i in range(20):
        sa.submit_flow_frame(clip[i], i / 5)
    alone = sa.flush()[0].features
    for k in fa:
        assert fa[k] == pytest.approx(alone[k], rel=1e-4, abs=1e-5), k
    assert fb["flow_mag_mean"] != pytest.approx(fa["flow_mag_mean"])


def test_bad_input_gives_clear_errors(models, clip):
    a = StreamAnalyzer(models)
    with pytest.raises(ValueError, match="gray uint8"):
        a.submit_flow_frame(clip[0].astype(np.float32), 0.0)
    with pytest.raises(ValueError, match="RGB"):
        a.submit_cnn_frame(np.zeros((100, 100, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        a.submit_flow_frame(clip[0], -1.0)
    with pytest.raises(ValueError, match="finite"):
        a.submit_flow_frame(clip[0], math.nan)
    with pytest.raises(TypeError, match="seconds"):
        a.submit_flow_frame(clip[0], "soon")
    with pytest.raises(ValueError, match="invalid analyzer config"):
        AnalyzerConfig(window_s=0)
    with pytest.raises(RuntimeError, match="no models"):
        StreamAnalyzer().add_flow_frame(clip[0], 0.0)
    assert a.flush() == []
