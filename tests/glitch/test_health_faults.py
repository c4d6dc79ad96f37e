"""Stream health on real footage with planted faults, through ingest's real decoder.

The footage is ../shared/data/media/openarena_dm2.mp4 (real first-person-shooter gameplay with
game sound); each fault is planted at 8 s of a 20 s excerpt. Every kind must start within 1 s of
the fault and be the only incident of the stream; its START must be decided within 1 s (silence
and freeze: their minimum + 1 s). What is judged from audio is known once ingest's chunk that
carries it is in: with 0.25 s chunks (ingest.audio_chunk_s; the default is 1 s) loudness and av_drift are decided
within 1 s too; audio_gap, judged live against the video clock, within 1.3 s (HEALTH.md's Limits).
"""

from __future__ import annotations

from functools import partial

from pathlib import Path

import numpy as np
import pytest

from services.glitch.health.monitor import HealthConfig

from training.glitch.health_media import SHARED, media, recode_audio, recode_video, remux, run

GAME = SHARED / "media" / "openarena_dm2.mp4"
AT, SECONDS = 8.0, 20.0
CHUNK_S = 0.25  # ingest.audio_chunk_s for sub-second audio health (the default is 1 s): what a chunk tells is known once it is whole
media = partial(media, audio_chunk_s=CHUNK_S)
GAP_S = 1.3  # audio_gap's verdict: see test_audio_gap

pytestmark = pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")


def one_incident(events, kind: str):
    """The START and END of the stream's only incident, which must be of `kind`."""
    summary = [(e.phase, e.kind, round(e.start_s, 2), round(e.end_s, 2)) for e in events]
    incidents = {e.incident for e in events}
    assert len(incidents) == 1 and {e.kind for e in events} == {kind}, summary
    start = next(e for e in events if e.phase == "start")
    end = next(e for e in events if e.phase == "end")
    return start, end


def test_black_picture_within_a_second(tmp_path: Path) -> None:
    black = lambda rgb, t, prev: np.zeros_like(rgb) if AT <= t < AT + 3 else rgb  # noqa: E731
    start, end = one_incident(run(media(recode_video(GAME, tmp_path / "b.mkv", black, end_s=SECONDS))), "black")
    assert AT <= start.start_s <= AT + 0.5 and start.detected_at_s - AT <= 1.0
    assert AT + 2.4 <= end.end_s <= AT + 3.0 and start.value < 1.0


def test_freeze_within_its_minimum_plus_a_second(tmp_path: Path) -> None:
    def freeze(rgb, t, prev):
        return prev if AT <= t < AT + 11 else rgb  # the picture at 8 s, held for 11 s

    cfg = HealthConfig()
    start, end = one_incident(run(media(recode_video(GAME, tmp_path / "f.mkv", freeze, end_s=SECONDS + 2)), cfg), "freeze")
    assert AT - 0.1 <= start.start_s <= AT + 0.1
    assert start.detected_at_s - AT <= cfg.freeze_min_s + 1.0
    assert AT + 10.8 <= end.end_s <= AT + 11.1


def test_silence_within_its_minimum_plus_a_second(tmp_path: Path) -> None:
    def mute(x, t, rate):
        n = np.arange(x.shape[1]) / rate + t
        x[:, (n >= AT) & (n < AT + 5)] = 0.0
        return x

    cfg = HealthConfig()
    start, end = one_incident(run(media(recode_audio(GAME, tmp_path / "s.mkv", mute, until_s=SECONDS)), cfg), "silence")
    assert AT <= start.start_s <= AT + 0.2 and start.detected_at_s - AT <= cfg.silence_min_s + 1.0
    assert AT + 4.7 <= end.end_s <= AT + 5.2


def test_deafening_audio_within_a_second(tmp_path: Path) -> None:
    def deafen(x, t, rate):
        n = np.arange(x.shape[1]) / rate + t
        part = (n >= AT) & (n < AT + 3)
        x[:, part] = np.clip(x[:, part] * 30.0, -1, 1)  # +30 dB into the limiter
        return x

    start, end = one_incident(run(media(recode_audio(GAME, tmp_path / "l.mkv", deafen, until_s=SECONDS))), "loudness")
    assert AT - 0.1 <= start.start_s <= AT + 0.5 and start.detected_at_s - AT <= 1.0
    assert "too loud" in start.detail and start.value > HealthConfig().target_lufs + HealthConfig().loud_lu
    assert AT + 2.5 <= end.end_s <= AT + 3.5


def test_audio_gap(tmp_path: Path) -> None:
    drop = lambda pkt, t: None if AT <= t < AT + 2 else pkt  # noqa: E731
    start, end = one_incident(run(media(remux(GAME, tmp_path / "g.mkv", drop, until_s=SECONDS))), "audio_gap")
    # live, START's start is the earliest the hole can have begun (ingest still held up to a
    # chunk of samples); END's is exact
    assert AT - 1.3 <= start.start_s <= AT + 0.1
    assert abs(end.start_s - AT) <= 0.1 and abs(end.end_s - (AT + 2)) <= 0.1
    # the hole shows when video is a chunk + 0.5 s + the gap minimum past the last audio (which
    # lies up to a chunk and ingest's 0.25 s resampling batch before the hole), or when the next
    # chunk comes, whichever is first; the video clock moves in 0.5 s steps (glitch frames, 2/s)
    assert start.detected_at_s - AT <= GAP_S


@pytest.mark.parametrize("at", [2.2, 2.4, 6.4])
def test_audio_gap_late_in_a_chunk_early_in_the_stream(tmp_path: Path, at: float) -> None:
    # A hole that began 0.2-0.4 s into one of ingest's former 1 s chunks: ingest sends the samples
    # it held (a chunk cut short) only on reading the audio after the hole, which put the live
    # rule's last audio forward and its verdict 2.1-2.3 s after the fault; the short chunk,
    # coming when video is well past its end, says the audio stopped there
    drop = lambda pkt, t: None if at <= t < at + 2 else pkt  # noqa: E731
    start, end = one_incident(run(media(remux(GAME, tmp_path / "g.mkv", drop, until_s=at + 6))), "audio_gap")
    assert at - 1.3 <= start.start_s <= at + 0.1 and abs(end.start_s - at) <= 0.1 and abs(end.end_s - (at + 2)) <= 0.1
    assert start.detected_at_s - at <= GAP_S, f"decided {start.detected_at_s - at:.2f} s after the hole"


@pytest.mark.parametrize("chunk_s", [1.0, CHUNK_S])
def test_audio_muxed_behind_the_video_of_an_mp4_is_no_gap(tmp_path: Path, chunk_s: float) -> None:
    # All the audio written after all the video: FFmpeg's MP4 demuxer hands it out up to 1 s
    # behind (it reads samples within 1 s of each other in file order), and ingest holds up to a
    # chunk more. With the former 0.5 s allowance this gave an audio_gap START at 6 s and an
    # incident that closed with no length at the stream's end (1 s chunks, ingest's default)
    late = remux(GAME, tmp_path / "late.mp4", until_s=SECONDS, audio_last=True)
    msgs = media(late, audio_chunk_s=chunk_s)
    chunks = [m for kind, m in msgs if kind == "audio"]
    assert chunks and all(c.demux_lead_max_s == 1.0 for c in chunks)
    assert run(msgs) == []
    mkv = [m for kind, m in media(remux(GAME, tmp_path / "same.mkv", until_s=4.0)) if kind == "audio"]
    assert mkv and all(m.demux_lead_max_s == 0.0 for m in mkv), "Matroska's demuxer sets no bound"


def test_audio_gap_in_an_mp4_with_its_audio_muxed_behind(tmp_path: Path) -> None:
    # A real hole is still found where the container's interleaving is allowed for; it is
    # decided up to the 0.5 s more that MP4's bound (1 s) allows than the usual 0.5 s
    drop = lambda pkt, t: None if AT <= t < AT + 2 else pkt  # noqa: E731
    late = remux(GAME, tmp_path / "g.mp4", drop, until_s=SECONDS, audio_last=True)
    start, end = one_incident(run(media(late)), "audio_gap")
    assert abs(end.start_s - AT) <= 0.1 and abs(end.end_s - (AT + 2)) <= 0.1
    assert start.detected_at_s - AT <= GAP_S + 0.5, f"decided {start.detected_at_s - AT:.2f} s after the hole"


def test_av_drift(tmp_path: Path) -> None:
    def shift(pkt, t):
        if t >= AT:
            late = int(round(0.3 / pkt.time_base))  # audio stamped 0.3 s late from 8 s on
            pkt.pts, pkt.dts = pkt.pts + late, pkt.dts + late
        return pkt

    start, end = one_incident(run(media(remux(GAME, tmp_path / "d.mkv", shift, until_s=SECONDS))), "av_drift")
    assert abs(start.start_s - AT) <= 1.0 and start.detected_at_s - AT <= 1.0
    assert 0.25 <= start.value <= 0.35 and "ahead of" in start.detail


def test_picture_size_change(tmp_path: Path) -> None:
    keep = lambda rgb, t, prev: rgb  # noqa: E731
    a = recode_video(GAME, tmp_path / "a.ts", keep, 0.0, AT, (640, 360))
    b = recode_video(GAME, tmp_path / "b.ts", keep, AT, SECONDS, (480, 360))
    both = tmp_path / "ab.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    start, end = one_incident(run(media(both)), "format_change")
    assert abs(start.start_s - AT) <= 0.5 and start.detected_at_s - AT <= 1.0 and end.end_s == start.start_s
    assert "640x360 -> 480x360" in start.detail


def test_frame_rate_change(tmp_path: Path) -> None:
    def halve(rgb, t, prev):
        return None if t >= AT and round(t * 30) % 2 else rgb  # 30 -> 15 fps at 8 s

    start, _ = one_incident(run(media(recode_video(GAME, tmp_path / "r.mkv", halve, end_s=SECONDS))), "format_change")
    assert abs(start.start_s - AT) <= 0.5 and start.detected_at_s - AT <= 1.0
    assert "30.0 -> 15.0 fps" in start.detail


def test_no_audio_track_is_reported_once(tmp_path: Path) -> None:
    events = run(media(remux(GAME, tmp_path / "n.mkv", no_audio=True, until_s=SECONDS)))
    start, end = one_incident(events, "no_audio")
    assert [e.phase for e in events] == ["start", "end"], "once: no UPDATEs, no silence or audio_gap on top"
    assert start.start_s == 0.0 and end.end_s >= SECONDS - 0.5
