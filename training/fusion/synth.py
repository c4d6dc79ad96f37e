"""Scripted game streams with planted highlights, decoys and chat reactions (training data for fusion).

Each stream (one seed) gets a layout:

* **highlights** (the labels): an action burst (fast sprites, `streamsight.app.synth`'s "action")
  with a real game sound at its start (minigun, explosion, shotgun) and often an excited voice
  line (amazing, excellent, laugh) inside it; the chat reacts `react_delay` seconds later with
  a message-rate burst full of laugh and hype emotes;
* **decoys** (not highlights): an action burst with no sound and no reaction, a loud sound
  with no action (explosion, speech, oops/boring voice, music) and a chat burst of plain
  questions with nothing on screen;
* background: still scenes and camera pans, a quiet tone and noise, sometimes a music bed,
  and a baseline chat of ordinary messages with a few stray emotes.

`write_stream` writes `<id>.mp4` (640x360 by default) and `<id>.chat.csv` (the chat service's
simple CSV replay: time,user,message) and returns the plan; `label_rows` gives the
highlight intervals for a labels CSV (stream,start,end,label).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamsight.app.synth import SoundEvent, make_media

ACTION_SOUNDS = ("minigun.ogg", "explosion.ogg", "shotgunfire.ogg")
EXCITED_VOICES = ("voice_classic_amazing.ogg", "voice_default_amazing.ogg", "voice_classic_excellent.ogg",
                  "voice_default_excellent.ogg", "voice_classic_laugh.ogg", "voice_default_laugh.ogg")
DECOY_SOUNDS = ("explosion.ogg", "speech_front_center.wav", "speech_rear_left.wav", "voice_classic_oops.ogg",
                "voice_default_boring.ogg", "voice_classic_boring.ogg", "shotgunfire.ogg")
MUSIC = "music_olympics.ogg"

PLAIN_CHAT = ("hi chat", "what game is this", "where are we on the map", "how long is the stream today",
              "first time here", "this build is interesting", "what rank is he", "is this a new patch",
              "back from dinner", "the music is nice", "what are the settings", "so we go left now",
              "anyone else watching from work", "hello from germany", "did he buy the upgrade", "ok")
QUESTION_CHAT = ("wait what happened", "is the stream lagging", "can you turn up the mic", "what did he say",
                 "why is he waiting", "chat is this normal", "how do you do that", "which server is this")
LAUGH_CHAT = ("LUL", "KEKW", "OMEGALUL", "LUL LUL LUL", "lmao", "KEKW KEKW", "hahaha", "LULW that was insane",
              "OMEGALUL no way", "ICANT")
HYPE_CHAT = ("PogChamp", "Pog", "POGGERS", "PogU", "Kreygasm", "W", "PogChamp PogChamp", "HYPERS", "Pog what a play",
             "EZ Clap", "GIGACHAD")


@dataclass(frozen=True)
class Moment:
    """A planted moment: [start, end) media seconds; kind highlight or one of the decoys."""

    start: float
    end: float
    kind: str  # highlight, decoy_action, decoy_sound, decoy_chat


@dataclass
class StreamPlan:
    stream_id: str
    duration: float
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    sounds: list[SoundEvent] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    chat: list[tuple[float, str, str]] = field(default_factory=list)  # time, user, message

    @property
    def highlights(self) -> list[Moment]:
        return [m for m in self.moments if m.kind == "highlight"]


def _place(rng: np.random.Generator, duration: float, length: float, taken: list[tuple[float, float]], margin: float = 4.0) -> float | None:
    for _ in range(200):
        start = float(rng.uniform(3.0, duration - length - 3.0))
        if all(start + length + margin <= a or start >= b + margin for a, b in taken):
            taken.append((start, start + length))
            return start
    return None


def plan_stream(stream_id: str, seed: int, duration: float, sounds_dir: Path, n_highlights: int | None = None) -> StreamPlan:
    """The layout of one stream; the same seed gives the same plan."""
    rng = np.random.default_rng(seed)
    plan = StreamPlan(stream_id, duration)
    taken: list[tuple[float, float]] = []
    n_hl = n_highlights if n_highlights is not None else int(rng.integers(2, 4))
    kinds = ["highlight"] * n_hl + list(rng.choice(["decoy_action", "decoy_sound", "decoy_chat"], size=int(rng.integers(1, 4))))
    for kind in kinds:
        length = float(rng.uniform(4.0, 8.0))
        start = _place(rng, duration, length, taken)
        if start is None:
            continue
        plan.moments.append(Moment(round(start, 2), round(start + length, 2), str(kind)))
    plan.moments.sort(key=lambda m: m.start)

    # Background camera: pans between the moments (global motion that is no highlight).
    t = 0.0
    while t < duration:
        length = float(rng.uniform(4.0, 12.0))
        if rng.random() < 0.35 and not any(m.kind in ("highlight", "decoy_action") and m.start < t + length and t < m.end for m in plan.moments):
            plan.segments.append((round(t, 2), round(min(duration, t + length), 2), "pan"))
        t += length
    for m in plan.moments:
        if m.kind in ("highlight", "decoy_action"):
            plan.segments.append((m.start, m.end, "action"))
        if m.kind == "highlight":
            plan.sounds.append(SoundEvent(sounds_dir / str(rng.choice(ACTION_SOUNDS)), m.start, float(rng.uniform(0.5, 1.0))))
            if rng.random() < 0.75:
                at = m.start + float(rng.uniform(0.5, max(0.6, m.end - m.start - 2.0)))
                plan.sounds.append(SoundEvent(sounds_dir / str(rng.choice(EXCITED_VOICES)), at, float(rng.uniform(0.6, 1.0))))
        elif m.kind == "decoy_sound":
            plan.sounds.append(SoundEvent(sounds_dir / str(rng.choice(DECOY_SOUNDS)), m.start, float(rng.uniform(0.5, 1.0))))
    if rng.random() < 0.4:
        plan.sounds.append(SoundEvent(sounds_dir / MUSIC, float(rng.uniform(0.0, duration / 2)), float(rng.uniform(0.1, 0.25))))
    plan.segments.sort()
    plan.chat = _chat(rng, plan)
    return plan


def _chat(rng: np.random.Generator, plan: StreamPlan) -> list[tuple[float, str, str]]:
    users = [f"viewer{k:03d}" for k in range(int(rng.integers(40, 120)))]
    rate = float(rng.uniform(0.3, 1.5))  # baseline messages per second
    rows: list[tuple[float, str, str]] = []
    t = float(rng.exponential(1.0 / rate))
    while t < plan.duration:
        text = str(rng.choice(PLAIN_CHAT))
        if rng.random() < 0.06:
            text = str(rng.choice(LAUGH_CHAT + HYPE_CHAT))
        rows.append((t, str(rng.choice(users)), text))
        t += float(rng.exponential(1.0 / rate))
    for m in plan.moments:
        if m.kind not in ("highlight", "decoy_chat"):
            continue
        # Chat reacts a few seconds after the moment (viewers see it, then type).
        start = m.start + float(rng.uniform(1.5, 4.0))
        length = float(rng.uniform(5.0, 10.0))
        burst_rate = rate * float(rng.uniform(3.0, 8.0)) + 1.5
        t = start
        while t < min(start + length, plan.duration):
            if m.kind == "highlight":
                text = str(rng.choice(LAUGH_CHAT if rng.random() < 0.5 else HYPE_CHAT))
            else:
                text = str(rng.choice(QUESTION_CHAT + PLAIN_CHAT))
            rows.append((t, str(rng.choice(users)), text))
            t += float(rng.exponential(1.0 / burst_rate))
    rows.sort()
    return rows


def write_stream(plan: StreamPlan, out_dir: Path, width: int = 640, height: int = 360, fps: int = 15) -> tuple[Path, Path]:
    """Encode the media and write the chat CSV; returns (media path, chat path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    media = out_dir / f"{plan.stream_id}.mp4"
    seed = int.from_bytes(plan.stream_id.encode()[-4:].rjust(4, b"\0"), "big")
    make_media(media, duration=plan.duration, width=width, height=height, fps=fps, segments=plan.segments,
               sounds=plan.sounds, noise=0.01, tone_hz=220.0, preset="ultrafast", seed=seed % (2**31))
    chat = out_dir / f"{plan.stream_id}.chat.csv"
    with chat.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["time", "user", "message"])
        for t, user, text in plan.chat:
            writer.writerow([f"{t:.3f}", user, text])
    return media, chat


def label_rows(plan: StreamPlan) -> list[tuple[str, float, float, str]]:
    """Labels CSV rows (stream, start, end, label) for the planted highlights."""
    return [(plan.stream_id, m.start, m.end, "highlight") for m in plan.highlights]
