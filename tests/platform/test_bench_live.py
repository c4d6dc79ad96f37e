"""The pieces of bench/bench_live.py: the live HLS server, and the percentile and keeps-up arithmetic."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import av
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from live_sources import SHARED_MEDIA, LiveHlsServer, Segment, prepare_segments  # noqa: E402
from live_stats import MAX_SLOPE, keeps_up, percentile, slope  # noqa: E402


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[Segment]:
    """4 s of 720p30 H.264 + AAC in 1 s segments: from the shared recording, or a generated clip without it."""
    cache = tmp_path_factory.mktemp("live-cache")
    source = SHARED_MEDIA
    if not source.is_file():
        from streamsight.app.synth import make_media

        source = make_media(cache / "src.mp4", duration=4.0, width=320, height=180, fps=30, segments=[(0.0, 4.0, "pan")]).path
    return prepare_segments(cache, 4.0, 1.0, source=source)


def test_segments_are_720p30_h264_aac_one_second_each(segments: list[Segment], tmp_path: Path) -> None:
    assert [round(s.duration_s, 3) for s in segments] == [1.0] * 4
    assert [s.start_s for s in segments] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    path = tmp_path / "one.ts"
    path.write_bytes(segments[1].data)
    with av.open(str(path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height, video.average_rate) == ("h264", 1280, 720, 30)
        assert (audio.codec_context.name, audio.rate) == ("aac", 48000)
        first = next(p for p in c.demux(video) if p.size)
        assert first.is_keyframe  # every segment starts on a keyframe, as a live encoder cuts them


def test_the_playlist_slides_with_the_clock_and_ends_with_the_last_segment(segments: list[Segment]) -> None:
    server = LiveHlsServer(segments, window=2, preroll=1)
    live = server.add("a", now=1000.0)  # one segment out at once: t0 = 999
    assert live.t0 == 999.0
    assert live.published(1000.0) == 1 and live.published(1000.99) == 1 and live.published(1001.0) == 2
    text = live.playlist(1001.5)
    assert "#EXT-X-MEDIA-SEQUENCE:0" in text and "0.ts" in text and "1.ts" in text and "ENDLIST" not in text
    text = live.playlist(1002.0)  # three out, the window shows the newest two
    assert "#EXT-X-MEDIA-SEQUENCE:1" in text and "\n0.ts" not in text and "2.ts" in text and "ENDLIST" not in text
    assert "#EXT-X-ENDLIST" in live.playlist(1003.0)
    live.first_requested = 1  # a reader that started at segment 1: its media time 0 was captured at t0 + 1
    assert live.capture_time(2.5) == pytest.approx(999.0 + 1.0 + 2.5)
    server._server.server_close()


def test_a_pyav_reader_reads_it_as_live_and_never_before_a_segment_is_out(segments: list[Segment]) -> None:
    with LiveHlsServer(segments, window=6, preroll=2) as server:
        live = server.add("cam")
        started = time.time()
        with av.open(server.url("cam"), options={"live_start_index": "-3"}, timeout=(10, 10)) as c:
            assert not c.duration  # no end marker when it opened: live
            times = [f.time for f in c.decode(video=0)]
    assert live.first_requested == 0
    assert sorted(live.requested_at) == [0, 1, 2, 3]
    for k, at in live.requested_at.items():
        assert at >= live.t0 + segments[k].end_s - 1e-3, f"segment {k} served before it was out"
    # The last segment comes out 2 s after the start (two were out at once): the read lasts that long at least.
    assert time.time() - started >= segments[-1].end_s - segments[1].end_s - 0.05
    assert len(times) == 120 and all(b > a for a, b in zip(times, times[1:]))


def test_percentile_interpolates_between_ranks() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 95) == pytest.approx(19.05)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 20.0


def test_keeps_up_judges_a_steady_stream_and_catches_a_falling_behind_one() -> None:
    ends = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    steady = [1.4, 1.9, 1.2, 2.1, 1.5, 1.8]
    verdict = keeps_up(ends, steady, dropped=0, missing_windows=0, expected_windows=6)
    assert verdict.keeps_up and verdict.reasons == [] and abs(verdict.slope) < MAX_SLOPE
    # At 0.8x real time a window's score comes 2.5 s later than the one before.
    behind = [1.5 + 2.5 * k for k in range(6)]
    verdict = keeps_up(ends, behind, dropped=0, missing_windows=0, expected_windows=6)
    assert not verdict.keeps_up and slope(ends, behind) == pytest.approx(0.25)
    assert any("grows" in r for r in verdict.reasons)
    assert keeps_up(ends, steady, dropped=3, missing_windows=0).reasons == ["3 frames dropped"]
    assert "windows scored with a modality missing" in keeps_up(ends, steady, 0, missing_windows=1).reasons[0]
    assert not keeps_up(ends[:4], steady[:4], 0, 0, expected_windows=6).keeps_up
    assert not keeps_up(ends, [1.0, 1.0, 1.0, 1.0, 1.0, 16.0], 0, 0).keeps_up  # one window past fusion's deadline
    assert not keeps_up([], [], 0, 0).keeps_up
    assert "gaps" in keeps_up(ends, steady, 0, 0, gaps=1).reasons[0]  # segments lost: behind the live edge


def test_the_largest_n_that_kept_up_stops_at_the_first_that_did_not() -> None:
    from bench_live import largest_kept

    assert largest_kept({1: True, 2: True, 4: True, 6: False, 5: True}) == 5
    assert largest_kept({1: True, 2: True, 4: False, 3: True, 6: True}) == 3  # 6 keeping up after 4 failed does not count
    assert largest_kept({1: False, 2: True}) == 0
    assert largest_kept({}) == 0
