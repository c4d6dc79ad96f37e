"""Glitch detector on held-out real game footage: planted corruption and packet damage in OpenArena.

../shared/data/media/openarena_dm2.mp4 (60 s of real first-person-shooter gameplay: HUD, kill
feed, explosions, death-screen scoreboards) was never used in training. It is cut into excerpts
(--seconds, default 20), scaled to --size (default 640x360; at 1280x720 use 10 s excerpts, so
that an excerpt's frames and their copies fit in memory on a shared machine) and, as
training/glitch/evaluate.py does for its sources: each excerpt's clean encode
is run for false alarms; 1 s incidents of stripes (the seed's wrong-stride reads), green and
grey are planted every 6 s; P-frame packets are garbled, and dropped, every 5 s. Every file goes
through the real ingest pipeline, the shipped classifier and the detector with default settings.

    PYTHONPATH=. .venv/bin/python -m training.glitch.evaluate_game [--size 640x360] [--seconds 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from services.glitch.classifier import GlitchClassifier
from services.glitch.detector import DetectorConfig
from training.glitch import scenes
from training.glitch.evaluate import MEDIA, match, model_id, plant_damage, plant_synthetic, run_detector

GAME = MEDIA / "openarena_dm2.mp4"
FPS = 30


def excerpt(a: float, b: float, size: tuple[int, int]) -> np.ndarray:
    out = []
    with av.open(str(GAME)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for frame in c.decode(video=0):
            t = float(frame.pts * frame.time_base)
            if a <= t < b:
                out.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            elif t >= b:
                break
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a candidate classifier (ONNX); default the shipped one (glitch.model_precision)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=None, help="default services/glitch/models/glitch_game_<size>.eval.json")
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    out = args.out or Path(f"services/glitch/models/glitch_game_{args.size}.eval.json")
    excerpts = [(float(a), float(min(a + args.seconds, 60.0))) for a in np.arange(0.0, 60.0 - 1.0, args.seconds)]
    if not GAME.exists():
        raise SystemExit(f"needs the shared test media ({GAME})")
    started = time.time()
    clf, config, rng = GlitchClassifier(args.model, intra_threads=2), DetectorConfig(report_freeze=False), np.random.default_rng(17)
    report: dict = {"source": f"{GAME.name}, excerpts {excerpts}, {args.size}", "model": model_id(clf), "excerpts": {}}
    clean_s, clean_false = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for a, b in excerpts:
            frames = excerpt(a, b, size)
            name = f"{a:.0f}-{b:.0f}s"
            src = work / "src.mkv"
            scenes.encode(frames, src, crf=23, gop=2 * FPS, fps=FPS)
            events, dur, _, _ = run_detector(src, clf, config)
            clean = [{"kind": e.kind, "start_s": round(e.start_s + a, 2)} for e in events if e.phase == "start"]
            clean_s += dur
            clean_false += clean
            planted, truths = plant_synthetic(frames, FPS, rng)
            path = work / "planted.mkv"
            scenes.encode(planted, path, crf=23, gop=2 * FPS, fps=FPS)
            del planted
            events, _, _, _ = run_detector(path, clf, config)
            inc = {"synthetic": match(truths, events, config.close_after_s)}
            decoded, _, _ = scenes.decode(src)
            for mode in ("garble", "drop"):
                dst = work / f"{mode}.mkv"
                truths, damaged, _ = plant_damage(src, dst, decoded, FPS, rng, mode)
                events, _, _, _ = run_detector(dst, clf, config)
                inc[mode] = match(truths, events, config.close_after_s, damaged)
            del decoded, frames
            report["excerpts"][name] = {"clean_false_alarms": clean, "incidents": inc}
            print(name, json.dumps(report["excerpts"][name]), f"{time.time() - started:.0f}s", file=sys.stderr)  # noqa: T201
    totals: dict = {}
    for mode in ("synthetic", "garble", "drop"):
        rs = [e["incidents"][mode] for e in report["excerpts"].values()]
        truths, found = sum(r["truths"] for r in rs), sum(r["found"] for r in rs)
        delays = [d for r in rs for d in r["delays_s"]]
        totals[mode] = {"truths": truths, "found": found, "recall": round(found / max(1, truths), 3),
                        "within_1s": round(sum(d <= 1.0 for d in delays) / max(1, len(delays)), 3),
                        "false_alarms": sum(r["false_alarms"] for r in rs),
                        "missed": [m for r in rs for m in r["missed_kinds"]], "false_alarm_kinds": [k for r in rs for k in r["false_alarm_kinds"]]}
    report["totals"] = totals
    report["clean"] = {"seconds": round(clean_s, 1), "false_alarms": clean_false}
    report["eval_seconds"] = round(time.time() - started, 1)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"totals": totals, "clean": report["clean"]}, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
