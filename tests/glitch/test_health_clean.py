"""Stream health raises nothing on clean real footage: game sound, music, speech, a quiet scene.

- openarena_dm2.mp4: 60 s of real gameplay with game sound (explosions, gunfire, HUD);
- bigbuckbunny.mp4: 5.3 s of animation with its score;
- vtest.avi's 79 s of people walking (real camera footage, no audio of its own) with a sound
  track made of the shared real sounds: 30 s of music, speech and voice lines with their natural
  pauses, an 8 s quiet scene (the music 26 dB down), explosions and gunfire, then music again.
vtest.avi as shipped has no audio track: it is reported once as no_audio and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from .health_media import SHARED, media, run

MEDIA, SOUNDS = SHARED / "media", SHARED / "sounds"
RATE = 48000

pytestmark = pytest.mark.skipif(not (MEDIA / "openarena_dm2.mp4").exists() or not SOUNDS.exists(),
                                reason=f"needs the shared test media and sounds under {SHARED} (absent)")


def sound(name: str) -> np.ndarray:
    """A shared sound as 48 kHz stereo float32, shape (2, n)."""
    out = []
    with av.open(str(SOUNDS / name)) as c:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        for frame in c.decode(audio=0):
            out += [f.to_ndarray() for f in resampler.resample(frame)]
        out += [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(out, axis=1)


def soundtrack(seconds: float) -> np.ndarray:
    music = sound("music_olympics.ogg")
    pause = lambda s: np.zeros((2, int(s * RATE)), np.float32)  # noqa: E731
    parts = [music[:, : 30 * RATE], pause(0.8)]
    for name in ["speech_front_center.wav", "speech_rear_left.wav"] + [f"voice_{v}_{w}.ogg" for v in ("classic", "default")
                                                                        for w in ("amazing", "boring", "excellent", "laugh", "oops")]:
        parts += [sound(name), pause(0.4)]
    parts.append(music[:, 30 * RATE: 38 * RATE] * 10 ** (-26 / 20))  # a quiet scene
    parts += [sound("explosion.ogg"), sound("minigun.ogg"), sound("shotgunfire.ogg")]
    track = np.concatenate(parts, axis=1)
    rest = int(seconds * RATE) - track.shape[1]
    return np.concatenate([track, music[:, 40 * RATE: 40 * RATE + rest]], axis=1).astype(np.float32)


def with_soundtrack(video: Path, out: Path) -> Path:
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        v = dst.add_stream_from_template(vin)
        a = dst.add_stream("aac", rate=RATE, layout="stereo")
        seconds = float(vin.duration * vin.time_base) if vin.duration else float(src.duration) / 1e6
        track = soundtrack(seconds)
        packets = []
        for i in range(0, track.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:, i: i + 1024]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, i
            packets += [(float(p.pts * p.time_base), p) for p in a.encode(frame)]
        packets += [(float(p.pts * p.time_base), p) for p in a.encode(None)]
        for pkt in src.demux(vin):
            if pkt.dts is not None:
                pkt.stream = v
                packets.append((float(pkt.dts * pkt.time_base), pkt))
        for _, pkt in sorted(packets, key=lambda tp: tp[0]):  # interleaved, as a muxer would write a live recording
            dst.mux(pkt)
    return out


@pytest.mark.parametrize("name", ["openarena_dm2.mp4", "bigbuckbunny.mp4"])
def test_clean_footage_raises_nothing(name: str) -> None:
    events = run(media(MEDIA / name))
    assert events == [], [(e.phase, e.kind, e.start_s, e.end_s, e.detail) for e in events]


def test_music_speech_and_a_quiet_scene_raise_nothing(tmp_path: Path) -> None:
    events = run(media(with_soundtrack(MEDIA / "vtest.avi", tmp_path / "vtest_sound.mkv")))
    assert events == [], [(e.phase, e.kind, e.start_s, e.end_s, e.detail) for e in events]


def test_the_silent_film_is_reported_once_as_having_no_audio() -> None:
    events = run(media(MEDIA / "vtest.avi"))
    assert [(e.phase, e.kind) for e in events] == [("start", "no_audio"), ("end", "no_audio")]
    assert events[1].end_s >= 79.0
