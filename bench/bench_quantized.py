"""int8 against fp32 glitch classifier: tiles per second and the glitch stage's frames per second.

Both shipped models (services/glitch/models/glitch_cnn.onnx and glitch_cnn.int8.onnx) in one run,
on real 1280x720 footage (shared/data/media/openarena_dm2.mp4, sampled at the glitch stage's
2 fps):

- the tile classifier alone, at the service's batch sizes (24 tiles: one 720p frame; 32: the
  classifier's max_batch, which the service's 64-tile calls are split into), with 1 and 2
  onnxruntime threads. 1 thread: tiles per CPU second of this process; 2 threads: tiles per wall
  second (and the CPU seconds it took), since two threads are meant to shorten the wall time.
- the glitch stage's work per sampled frame (tiles, classifier, fill-band, chroma and shear
  checks, detector) on 1 thread: frames per CPU second, against PyAV decoding the same file on one
  thread in the same run.

Each measurement alternates the two models and keeps the best of --repeat, so a busy moment on
the shared machine hits both alike; compare the ratios, not the absolute figures, across runs.

    .venv/bin/python bench/bench_quantized.py [--repeat 5] [--json out.json]
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
from services.glitch.detector import Signal, StreamDetector
from services.glitch.tiles import cut

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media"
GAME = MEDIA / "openarena_dm2.mp4"
SAMPLE_FPS = 2.0
PRECISIONS = ("fp32", "int8")


def sampled_frames(path: Path, fps_out: float = SAMPLE_FPS) -> tuple[list[np.ndarray], float, float]:
    """Frames at `fps_out`, the CPU seconds of decoding every frame (1 thread), media seconds."""
    frames, next_t, t0 = [], 0.0, time.process_time()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        last = 0.0
        for f in c.decode(s):
            last = float(f.time or 0.0)
            if last + 1e-6 >= next_t:
                frames.append(f.to_ndarray(format="rgb24"))
                next_t += 1.0 / fps_out
    return frames, time.process_time() - t0, last


def decode_cpu_s(path: Path) -> float:
    t0 = time.process_time()
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.thread_count = 1
        for _ in c.decode(video=0):
            pass
    return time.process_time() - t0


def best_of(fns: dict[str, object], repeat: int) -> dict[str, tuple[float, float]]:
    """Each fn's best (wall s, CPU s) over `repeat` rounds, the fns alternating within a round."""
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if not GAME.exists():
        raise SystemExit(f"needs the shared test media ({GAME} is absent)")
    frames, _, media_s = sampled_frames(GAME)
    decode_s = min(decode_cpu_s(GAME) for _ in range(max(1, args.repeat // 2)))
    tiles = np.concatenate([cut(f)[0] for f in frames[:8]])  # 192 real 720p tiles
    out: dict = {"media": GAME.name, "frames_sampled": len(frames), "tiles": {}, "stage": {}}
    print(f"baseline: PyAV decode of {GAME.name} (1 thread): {decode_s:.2f} CPU s for {media_s:.1f} media s "
          f"({decode_s / media_s:.3f} CPU s per media s)")
    out["decode_cpu_s_per_media_s"] = round(decode_s / media_s, 4)

    for threads in (1, 2):
        clfs = {p: GlitchClassifier(intra_threads=threads, precision=p) for p in PRECISIONS}
        for batch in (24, 32):
            n = len(tiles) // batch * batch
            for clf in clfs.values():
                clf.max_batch = batch
                clf.tile_probabilities(tiles[:batch])  # warm

            def run(clf: GlitchClassifier, n: int = n) -> None:
                clf.tile_probabilities(tiles[:n])

            best = best_of({p: (lambda c=c: run(c)) for p, c in clfs.items()}, args.repeat)
            # 1 thread: CPU time (the cost on a shared machine); 2 threads: wall time (what they buy)
            rate = {p: n / (best[p][1] if threads == 1 else best[p][0]) for p in PRECISIONS}
            ratio = rate["int8"] / rate["fp32"]
            unit = "tiles per CPU s" if threads == 1 else "tiles per wall s"
            print(f"tiles, {threads} thread(s), batch {batch}: fp32 {rate['fp32']:.0f}, int8 {rate['int8']:.0f} {unit}: "
                  f"int8 {ratio:.2f}x" + ("" if threads == 1 else f" (CPU s: fp32 {best['fp32'][1]:.2f}, int8 {best['int8'][1]:.2f})"))
            out["tiles"][f"threads{threads}_batch{batch}"] = {"unit": unit, **{p: round(r, 1) for p, r in rate.items()}, "int8_over_fp32": round(ratio, 3)}

    clfs = {p: GlitchClassifier(intra_threads=1, precision=p) for p in PRECISIONS}

    def stage(clf: GlitchClassifier) -> None:
        det = StreamDetector()
        for i in range(0, len(frames), 2):  # the service's calls: 2 frames = 48 tiles, under CLASSIFY_TILES
            for j, score in enumerate(clf.classify(frames[i : i + 2])):
                t = (i + j) / SAMPLE_FPS
                det.add_frame(t, score, frames[i + j])
                det.add_signals([Signal(t)])
                det.advance()
        det.finish()

    for clf in clfs.values():
        clf.warm_up()
    best = best_of({p: (lambda c=c: stage(c)) for p, c in clfs.items()}, max(1, args.repeat // 2))
    for p in PRECISIONS:
        per_frame = best[p][1] / len(frames)
        cost = per_frame * SAMPLE_FPS / (decode_s / media_s)
        print(f"glitch stage {p}, 1280x720, 1 thread: {1 / per_frame:.1f} frames per CPU s, {per_frame * 1000:.1f} ms/frame; "
              f"at {SAMPLE_FPS:g} fps = {cost:.2f}x the decode of the same media")
        out["stage"][p] = {"frames_per_cpu_s": round(1 / per_frame, 2), "ms_per_frame": round(per_frame * 1000, 2), "cost_over_decode": round(cost, 3)}
    ratio = best["fp32"][1] / best["int8"][1]
    print(f"glitch stage int8 {ratio:.2f}x the frames per core of fp32")
    out["stage"]["int8_over_fp32"] = round(ratio, 3)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
