"""format_change and av_drift from what ingest's decoder tells of the source, on real footage.

The footage is ../shared/data/media/openarena_dm2.mp4 (real gameplay with game sound). A stream
whose audio changes format is two MPEG-TS parts written with PyAV and joined byte for byte (as a
live source would switch): the game's first 8 s with its stereo 48 kHz sound, then the next 6 s
with the same sound made mono (or 44.1 kHz); the AAC decoder follows the change mid-stream. The
picture is shrunk to 320x180 to keep the files cheap to make. Everything runs through ingest's
real decoder (training.glitch.health_media.media) and the MEDIA messages it gives.
"""

from __future__ import annotations

from functools import partial

from fractions import Fraction
from pathlib import Path

import av
import pytest

from services.glitch.health.monitor import HealthConfig

from training.glitch.health_media import SHARED, media, remux, run

GAME = SHARED / "media" / "openarena_dm2.mp4"
AT, SECONDS = 8.0, 14.0
CHUNK_S = 0.25  # ingest.audio_chunk_s for sub-second audio health (the default is 1 s): what a chunk tells is known once it is whole
media = partial(media, audio_chunk_s=CHUNK_S)
SIZE = (320, 180)

pytestmark = pytest.mark.skipif(not GAME.exists(), reason=f"needs the shared test media ({GAME} is absent)")


@pytest.fixture(scope="module")
def game() -> tuple[list, list]:
    """The game's first SECONDS decoded once: (t, picture at SIZE as yuv420p) and (t, audio frame)."""
    pictures, sounds = [], []
    with av.open(str(GAME)) as src:
        for frame in src.decode(src.streams.video[0], src.streams.audio[0]):
            t = float(frame.pts * frame.time_base)
            if t >= SECONDS:
                if pictures and sounds and pictures[-1][0] >= SECONDS - 0.1 and sounds[-1][0] >= SECONDS - 0.1:
                    break
                continue
            if isinstance(frame, av.VideoFrame):
                pictures.append((t, frame.to_ndarray(format="yuv420p", width=SIZE[0], height=SIZE[1])))
            else:
                sounds.append((t, frame))
    return pictures, sounds


def ts_part(game, out: Path, start_s: float, end_s: float, layout: str, rate: int, size: tuple[int, int] = SIZE) -> Path:
    """[start_s, end_s) of the game as MPEG-TS with the source's timestamps: the picture
    encoded at `size`, the sound resampled to `layout` at `rate` and AAC-encoded."""
    pictures, sounds = game
    fps = 30
    with av.open(str(out), "w", format="mpegts") as dst:
        v = dst.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = *size, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "28", "g": "30"}
        v.codec_context.time_base = Fraction(1, fps)
        a = dst.add_stream("aac", rate=rate, layout=layout)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        packets = []
        for t, yuv in pictures:
            if start_s <= t < end_s:
                f = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                f = f if size == SIZE else f.reformat(width=size[0], height=size[1])
                f.pts, f.time_base = int(round(t * fps)), Fraction(1, fps)
                packets += v.encode(f)
        packets += v.encode(None)
        next_pts = None
        for t, frame in sounds:
            if start_s <= t < end_s:
                for res in resampler.resample(frame):
                    next_pts = int(round(t * rate)) if next_pts is None else next_pts
                    res.pts, res.time_base = next_pts, Fraction(1, rate)
                    next_pts += res.samples
                    packets += a.encode(res)
        packets += a.encode(None)
        for p in sorted(packets, key=lambda p: float(p.dts * p.time_base)):  # interleaved, as a live source sends
            dst.mux(p)
    return out


@pytest.fixture(scope="module")
def joined(game, tmp_path_factory):
    """joined(layout, rate): the game's first AT s in stereo at 48 kHz, then up to SECONDS in
    `layout` at `rate`, as one MPEG-TS stream (made once per module)."""
    folder = tmp_path_factory.mktemp("format")
    first = ts_part(game, folder / "a.ts", 0.0, AT, "stereo", 48000)
    made: dict[tuple, Path] = {}

    def make(layout: str, rate: int, size: tuple[int, int] = SIZE) -> Path:
        if (layout, rate, size) not in made:
            b = ts_part(game, folder / f"b_{layout}_{rate}_{size[0]}.ts", AT, SECONDS, layout, rate, size)
            both = made[layout, rate, size] = folder / f"ab_{layout}_{rate}_{size[0]}.ts"
            both.write_bytes(first.read_bytes() + b.read_bytes())
        return made[layout, rate, size]

    return make


def summary(events) -> list:
    return [(e.phase, e.kind, round(e.start_s, 2), round(e.end_s, 2), e.detail) for e in events]


@pytest.mark.parametrize("layout, rate, said", [("mono", 48000, "audio channel layout stereo -> mono"),
                                                ("stereo", 44100, "audio sample rate 48000 -> 44100 Hz")])
def test_audio_format_switch_is_one_format_change(joined, layout: str, rate: int, said: str) -> None:
    events = run(media(joined(layout, rate)))
    assert [(e.phase, e.kind) for e in events] == [("start", "format_change"), ("end", "format_change")], summary(events)
    start = events[0]
    assert start.detail == said, summary(events)
    assert abs(start.start_s - AT) <= 0.1 and start.end_s == start.start_s
    assert start.detected_at_s - AT <= CHUNK_S + 0.01  # once the first chunk of the new format is whole


def test_joined_parts_of_one_format_raise_nothing(joined) -> None:
    """The control: the same two parts, both stereo 48 kHz, joined the same way."""
    events = run(media(joined("stereo", 48000)))
    assert events == [], summary(events)


def test_source_formats_of_the_windows_tell_the_switch(joined) -> None:
    msgs = media(joined("mono", 48000))
    formats = [f for kind, m in msgs if kind == "windows" for f in m.source_formats]
    facts = [(f.width, f.height, f.video_codec, f.audio_codec, f.audio_layout, f.audio_sample_rate) for f in formats]
    assert facts == [(*SIZE, "h264", "aac", "stereo", 48000), (*SIZE, "h264", "aac", "mono", 48000),
                     (*SIZE, "h264", "aac", "mono", 48000)], facts
    assert abs(formats[1].since_s - AT) <= 0.05 and formats[2].since_s == 10.0
    chunks = [m for kind, m in msgs if kind == "audio"]
    switch = next(c for c in chunks if c.source_layout == "mono")
    assert abs(switch.start_s - AT) <= 0.05, "a chunk ends where the source's layout changes"
    assert all(c.source_layout == "stereo" for c in chunks if c.start_s < switch.start_s)


def legacy(msgs):
    """The messages as an ingest without the source fields would have sent them."""
    out = []
    for kind, m in msgs:
        if kind == "audio":
            m.ClearField("source_start_s"), m.ClearField("source_layout"), m.ClearField("source_sample_rate")
        elif kind == "windows":
            m.ClearField("source_formats")
        out.append((kind, m))
    return out


def test_av_drift_under_ingests_resync_tolerance_is_seen_from_the_source_timestamps(tmp_path: Path) -> None:
    def shift(pkt, t):
        if t >= AT:
            late = int(round(0.15 / pkt.time_base))  # audio stamped 0.15 s late from 8 s on
            pkt.pts, pkt.dts = pkt.pts + late, pkt.dts + late
        return pkt

    cfg = HealthConfig(av_drift_max_s=0.1)
    msgs = media(remux(GAME, tmp_path / "d.mkv", shift, until_s=AT + 3))
    events = run(msgs, cfg)
    assert {e.kind for e in events} == {"av_drift"} and len({e.incident for e in events}) == 1, summary(events)
    start = events[0]
    assert start.phase == "start" and abs(start.start_s - AT) <= 1.0 and start.detected_at_s - AT <= 1.0
    assert 0.14 <= start.value <= 0.16 and "ahead of" in start.detail
    # ingest's own clock follows the source only past its 0.2 s tolerance: the former rule saw nothing
    assert run(legacy(msgs), cfg) == []


def test_a_source_size_change_the_sampled_frames_hide(joined) -> None:
    """320x180 -> 640x360: both are sampled at 160x90 here, so only the window record tells."""
    msgs = media(joined("stereo", 48000, (640, 360)), glitch_size=(160, 90))
    assert {(m.width, m.height) for kind, m in msgs if kind == "frames_glitch"} == {(160, 90)}
    events = run(msgs)
    assert [(e.phase, e.kind) for e in events] == [("start", "format_change"), ("end", "format_change")], summary(events)
    start = events[0]
    assert start.detail == "source picture size 320x180 -> 640x360" and abs(start.start_s - AT) <= 0.05
    assert start.detected_at_s == 10.0  # the end of the window record that tells it


def test_what_is_known_of_the_source_survives_a_snapshot(joined) -> None:
    """A replica taking the stream over just before the switch (from glitch's snapshot) knows
    the layout so far: the first mono chunk it sees is a change, reported once."""
    from services.glitch import snapshot
    from services.glitch.detector import DetectorConfig
    from services.glitch.health.monitor import StreamHealth, feed

    msgs = media(joined("mono", 48000))
    cut = next(i for i, (kind, m) in enumerate(msgs) if kind == "audio" and m.source_layout == "mono")  # taken over just before
    health = StreamHealth()
    events = [e for kind, m in msgs[:cut] for e in feed(health, kind, m)]
    state = snapshot.loads(snapshot.dumps({"health": health}), DetectorConfig(), HealthConfig())
    events += [e for kind, m in msgs[cut:] for e in feed(state["health"], kind, m)]
    assert [(e.phase, e.detail) for e in events] == [("start", "audio channel layout stereo -> mono"),
                                                     ("end", "audio channel layout stereo -> mono")], summary(events)
