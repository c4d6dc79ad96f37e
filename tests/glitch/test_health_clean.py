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

import pytest

from training.glitch.health_media import SHARED, media, run, with_soundtrack

MEDIA, SOUNDS = SHARED / "media", SHARED / "sounds"

pytestmark = pytest.mark.skipif(not (MEDIA / "openarena_dm2.mp4").exists() or not SOUNDS.exists(),
                                reason=f"needs the shared test media and sounds under {SHARED} (absent)")


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
