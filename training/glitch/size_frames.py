"""Frame level: is a wrong-stride read of a 720p frame still called at a smaller glitch frame size?

Real 1280x720 game frames (../shared/data/media/openarena_dm2.mp4, never trained on) are read
back with a wrong width (1-64 pixels off) or a wrong height (8-96 rows off) and
shown at the source's size, as training/glitch/corrupt.py plants them; each read is judged by the shipped
classifier at 1280x720 and after ingest's AREA shrink to fit each smaller `--sizes` entry. A frame
counts as called when its score reaches the detector's open score or a model-free check (shear,
chroma) calls it misread: what opens a stripes incident without decoder evidence. The same clean
frames, shrunk the same way, give the highest clean stripes score at each size. Frames are not
H.264 coded here: training/glitch/evaluate_sizes.py judges whole coded incidents.

    PYTHONPATH=. .venv/bin/python -m training.glitch.size_frames [--frames 24] [--sizes 1280x720,640x360]

Writes training/glitch/results/glitch_size_frames.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np

from services.glitch.classifier import GlitchClassifier
from services.glitch.detector import DetectorConfig
from training.glitch import corrupt
from training.glitch.evaluate import MEDIA

OUT = Path(__file__).resolve().parent / "results" / "glitch_size_frames.json"
GAME = MEDIA / "openarena_dm2.mp4"


def frame_pairs(path: Path, times: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, next frame) at each media time, at the source's size."""
    out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        prev = None
        for f in c.decode(stream):
            t = float(f.pts * f.time_base)
            img = f.to_ndarray(format="rgb24")
            for k in times:
                if k not in out and t >= k and prev is not None:
                    out[k] = (prev, img)
            prev = img
            if len(out) == len(times):
                break
    return [out[k] for k in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24, help="game frames, spread over the file")
    ap.add_argument("--sizes", default="1280x720,640x360")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not GAME.exists():
        raise SystemExit(f"needs the shared test media ({GAME})")
    started = time.time()
    sizes = {s: tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")}
    clf, open_score, rng = GlitchClassifier(intra_threads=2), DetectorConfig().open_score, np.random.default_rng(5)
    pairs = frame_pairs(GAME, list(np.linspace(1.0, 58.0, args.frames)))
    errors = {"width": [d for d in range(-64, 65) if d], "height": [d for d in range(-96, 97) if abs(d) >= 8]}
    called = {s: {k: {"-": [0, 0], "+": [0, 0]} for k in errors} for s in sizes}
    clean_max = {s: 0.0 for s in sizes}
    scores: dict[str, list] = {s: [] for s in sizes}
    for a, b in pairs:
        reads = [(kind, int(d)) for kind, ds in errors.items() for d in rng.choice(ds, 2, replace=False)]
        for name, (w, h) in sizes.items():
            shrink = (lambda x: x) if (w, h) == a.shape[1::-1] else (lambda x: corrupt.resize(x, w, h))
            clean = clf.classify([shrink(a)])[0]
            clean_max[name] = max(clean_max[name], clean.kinds["stripes"])
            for kind, d in reads:
                big = corrupt.read_as(a, b, 1280 + d, 720) if kind == "width" else corrupt.read_as(a, b, 1280, 720 + d)
                big = corrupt.resize(big, 1280, 720)  # a broken source still sends pictures of its size
                s = clf.classify([shrink(big)])[0]
                hit = s.corrupt >= open_score or s.misread
                n = called[name][kind]["-" if d < 0 else "+"]
                n[0] += 1
                n[1] += int(hit)
                scores[name].append((kind, d, round(s.corrupt, 3), bool(s.misread)))
        print(f"{len(scores[next(iter(sizes))])} reads, {time.time() - started:.0f}s", file=sys.stderr, flush=True)  # noqa: T201
    report = {"source": f"{GAME.name}, {args.frames} frames at 1280x720", "open_score": open_score,
              "called": {s: {k: {sign: f"{v[1]}/{v[0]}" for sign, v in by.items()} for k, by in c.items()} for s, c in called.items()},
              "called_total": {s: f"{sum(v[1] for by in c.values() for v in by.values())}/{sum(v[0] for by in c.values() for v in by.values())}"
                               for s, c in called.items()},
              "clean_stripes_max": {s: round(v, 4) for s, v in clean_max.items()},
              "reads": scores, "eval_seconds": round(time.time() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("called", "called_total", "clean_stripes_max")}, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
