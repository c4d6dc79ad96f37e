"""Stream-health evaluation on real footage: per-kind recall, onset error, time to detect, false reports.

Each kind's fault is planted three times (at 6, 25 and 44 s) into openarena_dm2.mp4 (60 s of real
gameplay with game sound; pictures re-encoded at 640x360 where the fault is in the picture),
the file goes through ingest's real decoder, and `StreamHealth` (default settings) judges it.
A planted fault is found when an incident of its kind starts within 1 s of it and was decided
within 1 s after its minimum (freeze, silence, no_audio) and, for the audio kinds, after the
audio chunk that carries it is in (ingest's audio_chunk_s, or --audio-chunk-s); `onset` is the incident's start minus the fault's, `detect`
the media time the START was decided at (all the data it needed in) minus the fault's start. Every other incident
is a false report. The clean footage is the shared real media: openarena_dm2.mp4, bigbuckbunny.mp4
and vtest.avi with a sound track of the shared real sounds (music, speech, a quiet scene,
explosions), plus vtest.avi as shipped, which must give exactly one no_audio incident.

    PYTHONPATH=. .venv/bin/python -m training.glitch.health_eval [--out services/glitch/health/health.metrics.json]
    PYTHONPATH=. .venv/bin/python -m training.glitch.health_eval --kinds audio_gap  # some kinds: printed, written only to --out
    PYTHONPATH=. .venv/bin/python -m training.glitch.health_eval --audio-chunk-s 1.0  # ingest's former chunk (not written unless --out)
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from services.glitch.health.monitor import KINDS, HealthConfig
from services.ingest.audio import AudioChunker
from training.glitch.health_media import SHARED, media as media_of, recode_audio, recode_video, remux, run, with_soundtrack

GAME = SHARED / "media" / "openarena_dm2.mp4"
TIMES = (6.4, 25.7, 44.2)  # not on ingest's audio chunk boundaries (0.25 s or 1 s)
CHUNK_S = 0.25  # ingest.audio_chunk_s measured by default: the setting for sub-second audio health (ingest's default is 1 s); what a chunk shows is known once all of it is in
HELD_S = inspect.signature(AudioChunker).parameters["batch_seconds"].default  # input gathered before resampling


def _in(times, t, length):
    return any(a <= t < a + length for a in times)


def plant(kind: str, out: Path) -> Path:
    if kind == "black":
        return recode_video(GAME, out, lambda rgb, t, prev: np.zeros_like(rgb) if _in(TIMES, t, 3) else rgb)
    if kind == "freeze":
        return recode_video(GAME, out, lambda rgb, t, prev: prev if _in(TIMES, t, 11) and prev is not None else rgb)
    if kind == "format_change":  # 30 -> 15 fps for 8 s, three times (each switch back is a change too)
        return recode_video(GAME, out, lambda rgb, t, prev: None if _in(TIMES, t, 8) and round(t * 30) % 2 else rgb)
    if kind in ("silence", "loudness"):
        def change(x, t, rate):
            n = np.arange(x.shape[1]) / rate + t
            for a in TIMES:
                part = (n >= a) & (n < a + (5 if kind == "silence" else 3))
                x[:, part] = 0.0 if kind == "silence" else np.clip(x[:, part] * 30.0, -1, 1)
            return x
        return recode_audio(GAME, out, change)
    if kind == "audio_gap":
        return remux(GAME, out, lambda pkt, t: None if _in(TIMES, t, 2) else pkt)
    if kind.startswith("av_drift"):  # audio stamped 0.3 s later from TIMES[i] on (one file each: it stays)
        at = TIMES[int(kind[-1])]

        def shift(pkt, t):
            d = int(round(0.3 / pkt.time_base)) if t >= at else 0
            pkt.pts, pkt.dts = pkt.pts + d, pkt.dts + d
            return pkt
        return remux(GAME, out, shift)
    if kind == "no_audio":
        return remux(GAME, out, no_audio=True)
    raise ValueError(kind)


def allowance(kind: str, cfg: HealthConfig, chunk_s: float = CHUNK_S) -> float:
    """How long after the fault its START may come: 1 s after the kind's own minimum, and for
    what is judged from audio, after the chunk that carries it is in (ingest's chunks: `chunk_s`);
    audio_gap, judged against the video clock, also after the input ingest gathers before
    resampling it (HELD_S), which it holds at the hole with the unfinished chunk."""
    minimum = {"freeze": cfg.freeze_min_s, "silence": cfg.silence_min_s, "no_audio": cfg.no_audio_after_s}.get(kind, 0.0)
    audio = chunk_s + (HELD_S if kind == "audio_gap" else 0.0)
    return minimum + 1.0 + (audio if kind in ("silence", "loudness", "audio_gap", "av_drift") else 0.0)


def evaluate(tmp: Path, kinds: tuple[str, ...] = KINDS, chunk_s: float = CHUNK_S) -> dict:
    cfg = HealthConfig()
    media = partial(media_of, audio_chunk_s=chunk_s)
    report: dict = {"audio_chunk_s": chunk_s, "kinds": {}, "clean": {}}
    for kind in kinds:
        if kind == "av_drift":  # a drift stays: one file per planted time
            events, planted = [], TIMES
            for i in range(len(TIMES)):
                for e in run(media(plant(f"av_drift{i}", tmp / f"{kind}{i}.mkv")), cfg):
                    e.incident += 1000 * i
                    events.append(e)
        else:
            events = run(media(plant(kind, tmp / f"{kind}.mkv")), cfg)
            planted = (0.0,) if kind == "no_audio" else TIMES
        starts = [e for e in events if e.phase == "start"]
        ends = {e.incident: e for e in events if e.phase == "end"}
        found, false = [], []
        for e in starts:
            start = ends[e.incident].start_s if e.incident in ends else e.start_s  # END's start is the final one
            match = next((a for a in planted if e.kind == kind and abs(start - a) <= 1.0 and e.detected_at_s - a <= allowance(kind, cfg, chunk_s)
                          and a not in [f["at"] for f in found]), None)
            if match is None and kind == "format_change" and e.kind == kind and any(abs(start - (a + 8)) <= 1.0 for a in TIMES):
                continue  # the switch back to 30 fps: a real change too
            if match is None:
                false.append({"kind": e.kind, "start_s": round(start, 2), "detected_at_s": round(e.detected_at_s, 2), "detail": e.detail})
            else:
                found.append({"at": match, "onset_s": round(start - match, 3), "detect_s": round(e.detected_at_s - match, 3)})
        report["kinds"][kind] = {
            "planted": len(planted), "found": len(found), "recall": len(found) / len(planted),
            "onset_s": [f["onset_s"] for f in found], "detect_s": [f["detect_s"] for f in found], "false_reports": false,
        }
        print(kind, report["kinds"][kind])
    clean = {
        "openarena_dm2.mp4": SHARED / "media" / "openarena_dm2.mp4",
        "bigbuckbunny.mp4": SHARED / "media" / "bigbuckbunny.mp4",
        "vtest.avi + shared sounds": with_soundtrack(SHARED / "media" / "vtest.avi", tmp / "vtest_sound.mkv"),
        "vtest.avi (no audio track)": SHARED / "media" / "vtest.avi",
    }
    for name, path in clean.items():
        msgs = media(path)
        seconds = max(s.pts_s for k, m in msgs if k == "signals" for s in m.signals)
        starts = [e for e in run(msgs, cfg) if e.phase == "start"]
        expected = ["no_audio"] if "no audio" in name else []
        report["clean"][name] = {"seconds": round(seconds, 1), "incidents": [e.kind for e in starts], "expected": expected,
                                 "false_reports": len(starts) - len([e for e in starts if e.kind in expected][:len(expected)])}
        print(name, report["clean"][name])
    report["clean_seconds"] = round(sum(c["seconds"] for c in report["clean"].values()), 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="where the report goes (default, with all kinds: services/glitch/health/health.metrics.json)")
    ap.add_argument("--kinds", help=f"comma-separated kinds to plant (default all: {','.join(KINDS)}); the clean footage is always judged")
    ap.add_argument("--audio-chunk-s", type=float, default=CHUNK_S,
                    help=f"ingest's audio chunk length (default {CHUNK_S:g}; another one is written only to --out)")
    args = ap.parse_args()
    if not 0.05 <= args.audio_chunk_s <= 5.0:
        raise SystemExit(f"--audio-chunk-s must be in [0.05, 5] s, got {args.audio_chunk_s}")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip()) if args.kinds else KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise SystemExit(f"--kinds: unknown {unknown or 'empty list'}; choose from {', '.join(KINDS)}")
    if not GAME.exists():
        raise SystemExit(f"needs the shared test media ({GAME})")
    with tempfile.TemporaryDirectory() as tmp:
        report = evaluate(Path(tmp), kinds, args.audio_chunk_s)
    default = kinds == KINDS and args.audio_chunk_s == CHUNK_S
    out = args.out or (Path("services/glitch/health/health.metrics.json") if default else None)
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
