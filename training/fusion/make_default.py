"""Build the default fusion models from generated streams (reproducible: fixed seeds).

    python -m training.fusion.make_default [--work DIR] [--train 14] [--test 6]

1. Generates scripted game streams (training.fusion.synth): `--train` streams from seeds
   1000.. for training and `--test` held-out streams from seeds 5000.. with another layout
   (24 fps instead of 15, always 3 highlights).
2. Computes their feature records with the services' own stage logic, exactly as the stack
   publishes them (training.fusion.extract), and writes `features_train.jsonl`, `features_test.jsonl`, `labels_train.csv`, `labels_test.csv`.
3. Trains and evaluates (training.fusion.train): `default.json` on vision+audio+chat,
   `default_av.json` on vision+audio (for streams without chat), and a weak-label model
   (chat reaction labels, audio+vision features) that is evaluated but not shipped.
   Reports go to `<work>/report_*.json`; the models to services/fusion/models/.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from services.vision.runtime import VisionModels
from training.fusion import extract, records, synth
from training.fusion.train import _parser, run

REPO = Path(__file__).resolve().parents[2]
SOUNDS = REPO.parent / "shared" / "data" / "sounds"
MODELS = REPO / "services" / "fusion" / "models"


def generate(work: Path, name: str, seeds: list[int], layout: dict, models: VisionModels, sounds: Path) -> None:
    feats, labels = work / f"features_{name}.jsonl", work / f"labels_{name}.csv"
    if feats.exists() and labels.exists():
        print(f"{name}: reusing {feats}")
        return
    rows = []
    tmp = work / f"{name}.part.jsonl"
    tmp.write_text("")
    for seed in seeds:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed + 7)
        duration = float(rng.uniform(*layout["duration"]))
        plan = synth.plan_stream(f"{name}-{seed}", seed, duration, sounds, layout.get("highlights"))
        media, chat = synth.write_stream(plan, work / "media", layout["width"], layout["height"], layout["fps"])
        recs = extract.extract(media, plan.stream_id, models, chat)
        records.write_jsonl(recs, tmp, append=True)
        rows += synth.label_rows(plan)
        media.unlink()  # features and chat are what training needs; the media is cheap to remake
        print(f"{plan.stream_id}: {duration:.0f} s, {len(plan.highlights)} highlights, {len(recs)} records, {time.perf_counter() - t0:.1f} s")
    with labels.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["stream", "start", "end", "label"])
        w.writerows(rows)
    tmp.replace(feats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "build" / "fusion-data")
    p.add_argument("--train", type=int, default=14)
    p.add_argument("--test", type=int, default=6)
    p.add_argument("--sounds", type=Path, default=SOUNDS)
    p.add_argument("--out", type=Path, default=MODELS)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    models = VisionModels(intra_threads=2)
    generate(args.work, "train", list(range(1000, 1000 + args.train)), {"width": 640, "height": 360, "fps": 15, "duration": (60, 90)}, models, args.sounds)
    generate(args.work, "test", list(range(5000, 5000 + args.test)), {"width": 640, "height": 360, "fps": 24, "duration": (70, 90), "highlights": 3}, models, args.sounds)
    w = args.work
    common = ["--features", str(w / "features_train.jsonl"), "--test-features", str(w / "features_test.jsonl"), "--test-labels", str(w / "labels_test.csv")]
    jobs = {
        "default": [*common, "--labels", str(w / "labels_train.csv"), "--version", "fusion-default@1", "--out", str(args.out / "default.json")],
        "default_av": [*common, "--labels", str(w / "labels_train.csv"), "--modalities", "vision,audio", "--version", "fusion-default-av@1", "--out", str(args.out / "default_av.json")],
        "weak": [*common, "--weak", "--version", "fusion-weak@1"],
    }
    summary = {}
    for name, argv_ in jobs.items():
        print(f"\n== {name}")
        summary[name] = run(_parser().parse_args([*argv_, "--report", str(w / f"report_{name}.json")]))
    (args.out / "default.metrics.json").write_text(
        json.dumps({k: {kk: v[kk] for kk in ("labels", "streams", "cross_validation", "held_out", "baseline_f1") if kk in v} for k, v in summary.items()}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
