"""Generated streams for judging moments: planted moments 15-40 s apart, distractors beside them,
chat reacting 2-10 s late.

Each stream (one seed) has moments whose starts are 15 to 40 s apart. A **moment** is an action
burst (fast sprites) 3-8 s long with a real game sound at its start (minigun, explosion, shotgun)
and often an excited voice line inside it; the chat answers `lag` seconds after the moment's
start (2-10 s, drawn per moment) with a burst of laugh and hype emotes, many of them repeated.
Beside about two moments in three sits a **distractor** (never a highlight), 1-4 s before or after
it: a music swell (6 s of real game music faded in and out, no action, no reaction), a camera
pan (global motion, no sound, no reaction) or chat spam (a copy-pasta and questions, nothing
on screen). The background is a still scene with a quiet tone and noise and an ordinary chat.

`plan` returns the layout (`synth.StreamPlan`: moments of kind "highlight" and the distractors as
"decoy_music", "decoy_pan", "decoy_chat"), with each moment's chat lag in `lags`; `write`
writes the media and the chat replay (synth.write_stream). The same seed gives the same stream.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamsight.app.synth import SoundEvent, _load_sound
from training.fusion import synth
from training.fusion.synth import Moment, StreamPlan

SWELL_S = 6.0
COPYPASTA = ("this is the best stream on twitch and i will not be taking questions at this time",
             "chat if you read this you are legally obligated to type W")


@dataclass
class MomentPlan(StreamPlan):
    lags: dict[float, float] = field(default_factory=dict)  # moment start -> chat lag, seconds


def music_swell(sounds_dir: Path, out: Path, rate: int = 48000) -> Path:
    """6 s of the game music with a 2 s fade in and a 1 s fade out, as a WAV (made once)."""
    if out.exists():
        return out
    music = _load_sound(sounds_dir / synth.MUSIC, rate)
    start = int(8.0 * rate)
    clip = music[start : start + int(SWELL_S * rate)].astype(np.float64)
    ramp = np.ones(clip.size)
    ramp[: 2 * rate] = np.linspace(0.0, 1.0, 2 * rate)
    ramp[-rate:] = np.linspace(1.0, 0.0, rate)
    clip = np.clip(clip * ramp, -1.0, 1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((clip * 32767).astype("<i2").tobytes())
    return out


def plan(stream_id: str, seed: int, duration: float, sounds_dir: Path, swell: Path) -> MomentPlan:
    rng = np.random.default_rng(seed)
    p = MomentPlan(stream_id, duration)
    t = float(rng.uniform(8.0, 15.0))
    while t + 8.0 < duration - 12.0:
        length = float(rng.uniform(3.0, 8.0))
        p.moments.append(Moment(round(t, 2), round(t + length, 2), "highlight"))
        p.lags[round(t, 2)] = round(float(rng.uniform(2.0, 10.0)), 2)
        t += float(rng.uniform(15.0, 40.0))
    highlights = list(p.moments)
    for k, m in enumerate(highlights):
        if rng.random() > 0.67:
            continue
        kind = str(rng.choice(["decoy_music", "decoy_pan", "decoy_chat"]))
        length = SWELL_S if kind == "decoy_music" else float(rng.uniform(4.0, 7.0))
        gap = float(rng.uniform(1.0, 4.0))
        before = (m.start - gap - length, m.start - gap)
        after_start = m.end + gap if kind != "decoy_chat" else m.start + p.lags[m.start] + 9.0 + gap
        after = (after_start, after_start + length)
        prev_end = highlights[k - 1].end + p.lags[highlights[k - 1].start] + 9.0 if k else 0.0
        next_start = highlights[k + 1].start if k + 1 < len(highlights) else duration
        options = [s for s in (before, after) if s[0] > max(prev_end, 1.0) + 1.0 and s[1] < next_start - 1.0 and s[1] < duration - 1.0]
        if not options:
            continue
        a, b = options[int(rng.integers(len(options)))]
        p.moments.append(Moment(round(a, 2), round(b, 2), kind))
    p.moments.sort(key=lambda m: m.start)
    for m in p.moments:
        if m.kind == "highlight":
            p.segments.append((m.start, m.end, "action"))
            p.sounds.append(SoundEvent(sounds_dir / str(rng.choice(synth.ACTION_SOUNDS)), m.start, float(rng.uniform(0.6, 1.0))))
            if rng.random() < 0.7:
                at = m.start + float(rng.uniform(0.5, max(0.6, m.end - m.start - 1.5)))
                p.sounds.append(SoundEvent(sounds_dir / str(rng.choice(synth.EXCITED_VOICES)), at, float(rng.uniform(0.6, 1.0))))
        elif m.kind == "decoy_pan":
            p.segments.append((m.start, m.end, "pan"))
        elif m.kind == "decoy_music":
            p.sounds.append(SoundEvent(swell, m.start, float(rng.uniform(0.5, 0.9))))
    p.segments.sort()
    p.chat = _chat(rng, p)
    return p


def _chat(rng: np.random.Generator, p: MomentPlan) -> list[tuple[float, str, str]]:
    users = [f"viewer{k:03d}" for k in range(int(rng.integers(60, 150)))]
    rate = float(rng.uniform(0.4, 1.5))
    rows: list[tuple[float, str, str]] = []
    t = float(rng.exponential(1.0 / rate))
    while t < p.duration:
        text = str(rng.choice(synth.PLAIN_CHAT)) if rng.random() > 0.06 else str(rng.choice(synth.LAUGH_CHAT + synth.HYPE_CHAT))
        rows.append((t, str(rng.choice(users)), text))
        t += float(rng.exponential(1.0 / rate))
    for m in p.moments:
        if m.kind == "highlight":
            start, length = m.start + p.lags[m.start], float(rng.uniform(5.0, 8.0))
            lines = synth.LAUGH_CHAT if rng.random() < 0.5 else synth.HYPE_CHAT
        elif m.kind == "decoy_chat":
            start, length = m.start, m.end - m.start
            lines = COPYPASTA + synth.QUESTION_CHAT
        else:
            continue
        burst = rate * float(rng.uniform(3.0, 8.0)) + 1.5
        t = start
        while t < min(start + length, p.duration):
            rows.append((t, str(rng.choice(users)), str(rng.choice(lines))))
            t += float(rng.exponential(1.0 / burst))
    rows.sort()
    return rows


def write(p: MomentPlan, out_dir: Path, width: int = 640, height: int = 360, fps: int = 15) -> tuple[Path, Path]:
    return synth.write_stream(p, out_dir, width, height, fps)


def generate(work: Path, name: str, seeds: list[int], sounds_dir: Path, duration: tuple[float, float] = (110.0, 140.0),
             fps: int = 15) -> tuple[Path, Path]:
    """Streams of `seeds` with their feature records (the services' own stage logic, as
    training.fusion.extract) in `<work>/moments_<name>.jsonl` and their plans (moments, kinds,
    lags) in `<work>/moments_<name>.plans.json`; reused when both exist."""
    import json
    import time

    from services.vision.runtime import VisionModels
    from training.fusion import extract, records

    feats, plans = work / f"moments_{name}.jsonl", work / f"moments_{name}.plans.json"
    if feats.exists() and plans.exists():
        return feats, plans
    work.mkdir(parents=True, exist_ok=True)
    models = VisionModels(intra_threads=2)
    swell = music_swell(sounds_dir, work / "music_swell.wav")
    tmp = work / f"moments_{name}.part.jsonl"
    tmp.write_text("")
    out = []
    for seed in seeds:
        t0 = time.perf_counter()
        length = float(np.random.default_rng(seed + 11).uniform(*duration))
        p = plan(f"{name}-{seed}", seed, length, sounds_dir, swell)
        media, chat = write(p, work / "media", fps=fps)
        records.write_jsonl(extract.extract(media, p.stream_id, models, chat), tmp, append=True)
        media.unlink()
        out.append({"stream": p.stream_id, "duration": p.duration, "lags": {str(k): v for k, v in p.lags.items()},
                    "moments": [{"start": m.start, "end": m.end, "kind": m.kind} for m in p.moments]})
        print(f"{p.stream_id}: {length:.0f} s, {len(p.highlights)} moments, {len(p.moments) - len(p.highlights)} distractors, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    plans.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(feats)
    return feats, plans


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="generate and extract the moment streams")
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parents[2] / "build" / "fusion-moments")
    parser.add_argument("--name", default="test")
    parser.add_argument("--seeds", default="6000-6005", help="first-last")
    parser.add_argument("--sounds", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "sounds")
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    generate(args.work, args.name, list(range(int(lo), int(hi or lo) + 1)), args.sounds)
