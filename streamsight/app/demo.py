"""The demo's sample: a synthetic game stream with action bursts, game sounds and a chat log
whose viewers react a few seconds after each burst. Everything is generated here (the demo
needs no data from outside the project); `make demo` analyses it.
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamsight.app.synth import SoundEvent, make_media

RATE = 48000


@dataclass(frozen=True)
class Sample:
    video: Path
    chat: Path
    highlights: list[tuple[float, float]] = field(default_factory=list)  # planted (start, end) seconds


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


def _gunfire(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Shots at ~11 per second: a noise click with a fast decay each."""
    out = np.zeros(int(seconds * RATE))
    shot = rng.normal(0, 1, int(0.06 * RATE)) * np.exp(-np.linspace(0, 9, int(0.06 * RATE)))
    for start in np.arange(0, seconds - 0.06, 1 / 11):
        i = int(start * RATE)
        out[i : i + len(shot)] += shot * rng.uniform(0.6, 0.9)
    return out * 0.8


def _explosion(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Low rumble: noise low-passed by a running mean, decaying over the sound."""
    noise = rng.normal(0, 1, int(seconds * RATE))
    low = np.convolve(noise, np.ones(60) / 60, mode="same") * 6
    return low * np.exp(-np.linspace(0, 4, len(low))) * 0.9


def _cheer(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A crowd swelling and fading: band-limited noise under a slow envelope."""
    noise = rng.normal(0, 1, int(seconds * RATE))
    band = noise - np.convolve(noise, np.ones(12) / 12, mode="same")
    envelope = np.sin(np.linspace(0, np.pi, len(band))) ** 2
    return band * envelope * 0.5


def make_chat(path: Path, duration: float, reactions: list[float], seed: int = 7) -> Path:
    """JSONL chat: steady small talk, and a burst of laugh/hype emotes 2-8 s after each reaction time."""
    rng = np.random.default_rng(seed)
    calm = ["hi chat", "what build is this", "nice map", "ok", "lol", "how long is the stream", "gg last round", "hello from Berlin"]
    hype = ["KEKW", "PogChamp PogChamp", "LUL", "W", "POGGERS", "OMEGALUL", "that was insane", "Pog", "GG", "LETS GO"]
    rows = []
    t = 0.0
    while t < duration:
        t += rng.exponential(1.2)
        rows.append((t, f"viewer{rng.integers(1, 60)}", calm[rng.integers(len(calm))]))
    for moment in reactions:
        for _ in range(int(rng.integers(35, 55))):
            rows.append((moment + rng.uniform(2, 8), f"viewer{rng.integers(1, 200)}", hype[rng.integers(len(hype))]))
    rows = sorted(r for r in rows if r[0] < duration)
    path.write_text("".join(json.dumps({"time": round(t, 2), "user": u, "message": m}) + "\n" for t, u, m in rows))
    return path


def make_sample(folder: Path, duration: float = 60.0, seed: int = 3) -> Sample:
    """Write sample.mp4 (640x360, 30 fps, H.264 + AAC) and chat.jsonl into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gun = _write_wav(folder / "gunfire.wav", _gunfire(rng, 6.0))
    boom = _write_wav(folder / "explosion.wav", _explosion(rng, 3.0))
    cheer = _write_wav(folder / "cheer.wav", _cheer(rng, 5.0))
    scale = duration / 60.0
    bursts = [(12 * scale, 19 * scale), (40 * scale, 47 * scale)]
    segments = [(b0, b1, "action") for b0, b1 in bursts] + [(25 * scale, 31 * scale, "pan")]
    sounds = [SoundEvent(gun, bursts[0][0] + 0.5), SoundEvent(boom, bursts[1][0] + 0.3), SoundEvent(cheer, bursts[1][0] + 2.5)]
    video = folder / "sample.mp4"
    make_media(
        video, duration=duration, width=640, height=360, fps=30, segments=segments, sounds=sounds, noise=0.01, seed=seed, facecam=True
    )
    chat = make_chat(folder / "chat.jsonl", duration, [b0 for b0, _ in bursts])
    return Sample(video, chat, bursts)
