"""int8 against fp32 glitch classifier on held-out footage: same decisions, same quality?

Two parts, both with the two shipped models (services/glitch/models/glitch_cnn.onnx and
glitch_cnn.int8.onnx) on footage neither saw in training nor in int8 calibration:

1. Frame flips (`--flips`, default on): frames of the real files (openarena_dm2.mp4 at 1280x720,
   bigbuckbunny.mp4, vtest.avi; 2 per media second), each clean and with the seed's stripes, green
   and grey (training.glitch.corrupt, one draw shared by both models), judged by both. A frame's
   decisions: score at the open score (0.95), score at the suspect score (0.35), the standalone
   stripes rule (stripes at the open score or a model-free misread), and the kind named when the
   score is at the open score. Counted: frames where any decision differs, per decision, and
   the largest score difference.
2. The held-out evaluation of the card (`--evaluate`): training.glitch.evaluate's main run once per
   precision, each in a fresh process with the same rng seed, so the planted faults are the same;
   its frame precision/recall and incident recall side by side. `--clean-hours` as there (0: skip the clean-footage hour).

    PYTHONPATH=. .venv/bin/python -m training.glitch.compare_precision [--evaluate] [--clean-hours 0]

Writes training/glitch/results/glitch_precision.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from services.glitch.classifier import FrameScore, GlitchClassifier
from services.glitch.detector import DetectorConfig
from training.glitch import corrupt
from training.glitch import evaluate as held_out

OUT = Path(__file__).resolve().parent / "results" / "glitch_precision.json"
FILES = ("openarena_dm2.mp4", "bigbuckbunny.mp4", "vtest.avi")
PRECISIONS = ("fp32", "int8")


def sampled(path: Path, fps: float = 2.0) -> list[np.ndarray]:
    """Frames at `fps`, each followed by the frame after it (what corrupt.corrupt reads into): [f0, f0+1, f1, f1+1, ...]."""
    out, next_t, want_next = [], 0.0, False
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for f in c.decode(stream):
            t = float(f.pts * f.time_base) if f.pts is not None else next_t
            if want_next:
                out.append(f.to_ndarray(format="rgb24"))
                want_next = False
            elif t + 1e-6 >= next_t:
                out.append(f.to_ndarray(format="rgb24"))
                next_t += 1.0 / fps
                want_next = True
    return out[: len(out) // 2 * 2]


def decisions(s: FrameScore, config: DetectorConfig) -> dict[str, object]:
    return {"open": s.corrupt >= config.open_score, "suspect": s.corrupt >= config.suspect_score,
            "stripes_rule": s.kinds["stripes"] >= config.open_score or s.misread,
            "kind": s.kind if s.corrupt >= config.open_score else ""}


def frame_flips(seed: int = 30) -> dict:
    config, rng = DetectorConfig(), np.random.default_rng(seed)
    clfs = {p: GlitchClassifier(intra_threads=2, precision=p) for p in PRECISIONS}
    flips = {k: 0 for k in ("any", "open", "suspect", "stripes_rule", "kind")}
    by_file: dict[str, dict] = {}
    frames_total, max_diff, flipped = 0, 0.0, []
    truth_called = {p: {"clean": [0, 0], "corrupted": [0, 0]} for p in PRECISIONS}
    for name in FILES:
        pairs = sampled(held_out.MEDIA / name)
        cases: list[tuple[np.ndarray, str]] = []
        for i in range(0, len(pairs), 2):
            cases.append((pairs[i], "clean"))
            kind = held_out.SYNTHETIC[int(rng.integers(0, 3))]
            cases.append((corrupt.corrupt(pairs[i], pairs[i + 1], kind, rng)[0], kind))
        file_flips = 0
        for k in range(0, len(cases), 8):
            part = cases[k : k + 8]
            scores = {p: c.classify([img for img, _ in part]) for p, c in clfs.items()}
            for j, (_, truth) in enumerate(part):
                d = {p: decisions(scores[p][j], config) for p in PRECISIONS}
                diff = [key for key in d["fp32"] if d["fp32"][key] != d["int8"][key]]
                for key in diff:
                    flips[key] += 1
                if diff:
                    flips["any"] += 1
                    file_flips += 1
                    flipped.append({"file": name, "case": k + j, "truth": truth, "decisions": diff,
                                    "fp32": round(scores["fp32"][j].corrupt, 4), "int8": round(scores["int8"][j].corrupt, 4)})
                max_diff = max(max_diff, abs(scores["fp32"][j].corrupt - scores["int8"][j].corrupt))
                for p in PRECISIONS:
                    called = d[p]["open"] or d[p]["stripes_rule"] or bool(scores[p][j].bands)
                    row = truth_called[p]["clean" if truth == "clean" else "corrupted"]
                    row[0] += 1
                    row[1] += int(called)
        frames_total += len(cases)
        by_file[name] = {"frames": len(cases), "flipped": file_flips}
        print(name, by_file[name], file=sys.stderr, flush=True)  # noqa: T201
    quality = {}
    for p, t in truth_called.items():
        tp, fp = t["corrupted"][1], t["clean"][1]
        quality[p] = {"precision": round(tp / max(1, tp + fp), 4), "recall": round(tp / max(1, t["corrupted"][0]), 4),
                      "clean_called": fp, "clean_frames": t["clean"][0], "corrupted_frames": t["corrupted"][0]}
    return {"frames": frames_total, "by_file": by_file, "flips": flips, "max_score_diff": round(max_diff, 4),
            "flipped": flipped, "called_by_precision": quality}


def evaluate_one(precision: str, clean_hours: float, out: Path) -> None:
    """training.glitch.evaluate's main with `precision`'s model, its report written to `out`."""
    held_out.OUT = out
    held_out.GlitchClassifier = functools.partial(GlitchClassifier, precision=precision)
    sys.argv = ["evaluate", "--clean-hours", str(clean_hours)]
    held_out.main()


def evaluation(clean_hours: float) -> dict:
    """training.glitch.evaluate's report for each precision, each in a fresh process: a second run
    in the same process planted different packet damage on the generated scenes (its decodes of
    damaged files are not reproducible there), so the two would not see the same frames."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in PRECISIONS:
            path = Path(tmp) / f"{p}.json"
            subprocess.run([sys.executable, "-m", "training.glitch.compare_precision", "--one", p,
                            "--clean-hours", str(clean_hours), "--out", str(path)], check=True)
            report = json.loads(path.read_text())
            out[p] = {k: report[k] for k in ("frame_level", "incident_totals", "clean_totals") if k in report}
            if report.get("clean_hour"):
                out[p]["clean_hour"] = report["clean_hour"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-flips", action="store_true")
    ap.add_argument("--evaluate", action="store_true", help="run training.glitch.evaluate for each precision")
    ap.add_argument("--clean-hours", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", choices=PRECISIONS, help=argparse.SUPPRESS)  # internal: one evaluation run, report to --out
    args = ap.parse_args()
    if args.one:
        evaluate_one(args.one, args.clean_hours, args.out)
        return
    missing = [n for n in FILES if not (held_out.MEDIA / n).exists()]
    if missing:
        raise SystemExit(f"needs the shared test media ({', '.join(missing)} absent from {held_out.MEDIA})")
    started = time.time()
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    if not args.no_flips:
        report["frame_flips"] = frame_flips()
    if args.evaluate:
        report["evaluate"] = evaluation(args.clean_hours)
    report["eval_seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.get("frame_flips", {}).items() if k != "flipped"}, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
