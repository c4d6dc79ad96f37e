"""Vision benchmark: flow and CNN throughput, cost per 10 s window at the default rates, and
that cost as a fraction of decoding the same window of 720p H.264 with PyAV (the baseline,
measured in the same run on the real Big Buck Bunny clip).

    .venv/bin/python bench/bench_vision.py [--threads 2] [--repeat 3]

On a GPU (CUDA provider) it also prints batch throughput for larger batches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np

from services.vision.runtime import VisionModels

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media"
WINDOW_S = 10.0
FLOW_FPS, CNN_FPS = 5.0, 1.0


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def decode_seconds_per_window(path: Path, repeat: int) -> tuple[float, str]:
    def decode() -> None:
        with av.open(str(path)) as c:
            for _ in c.decode(video=0):
                pass

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        duration = s.frames / float(s.average_rate)
        desc = f"{s.codec_context.width}x{s.codec_context.height} {s.codec_context.name} {float(s.average_rate):.0f} fps, {duration:.2f} s"
    return best_of(decode, repeat) * WINDOW_S / duration, desc


def frames(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    gray, rgb = [], []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            gray.append(f.reformat(width=320, height=180, format="gray").to_ndarray())
            rgb.append(f.reformat(width=224, height=224, format="rgb24").to_ndarray())
    return np.stack(gray), np.stack(rgb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    clip = MEDIA / "bigbuckbunny.mp4"
    models = VisionModels(intra_threads=args.threads, max_batch=64)
    models.warm_up()
    gray, rgb = frames(clip, 40)
    print(f"provider: {models.provider} {models.providers}, intra threads {args.threads}")

    rates: dict[str, float] = {}
    for batch in (1, 8):
        a, b = gray[:batch], gray[1 : batch + 1]
        rates[f"flow b{batch}"] = batch / best_of(lambda: models.flow(a, b), args.repeat)
    flows = list(models.flow(gray[:16], gray[1:17]))
    rates["motion_cnn b16"] = 16 / best_of(lambda: models.motion_probability(flows), args.repeat)
    for batch in (1, 10):
        rates[f"frame_cnn b{batch}"] = batch / best_of(lambda: models.embed(rgb[:batch]), args.repeat)
    for name, r in rates.items():
        print(f"{name:16s} {r:8.1f} /s  ({1000 / r:6.1f} ms each)")

    n_pairs, n_cnn = int(WINDOW_S * FLOW_FPS), int(WINDOW_S * CNN_FPS)
    costs = {
        "flow": n_pairs / rates["flow b8"],
        "motion_cnn": n_pairs / rates["motion_cnn b16"],
        "frame_cnn": n_cnn / rates["frame_cnn b10"],
    }
    window_cost = sum(costs.values())
    decode_cost, desc = decode_seconds_per_window(clip, args.repeat)
    print(f"\nper 10 s window ({n_pairs} flow pairs at 320x180, {n_cnn} CNN frames):")
    for k, v in costs.items():
        print(f"  {k:10s} {v * 1000:7.1f} ms")
    print(f"  total      {window_cost * 1000:7.1f} ms  = {window_cost / WINDOW_S:.3f} of real time")
    print(f"baseline: PyAV decode of the same window ({desc}): {decode_cost * 1000:.1f} ms")
    print(f"vision cost / decode cost = {window_cost / decode_cost:.2f}")
    print(f"streams per machine at real time (this thread count): {WINDOW_S / (window_cost + decode_cost):.1f}")

    if models.provider == "cuda":
        big_gray = np.repeat(gray[:8], 8, axis=0)
        big_rgb = np.repeat(rgb[:8], 8, axis=0)
        for batch in (8, 32, 64):
            r = batch / best_of(lambda: models.flow(big_gray[:batch], big_gray[:batch]), args.repeat)
            c = batch / best_of(lambda: models.embed(big_rgb[:batch]), args.repeat)
            print(f"GPU batch {batch:3d}: flow {r:8.1f} pairs/s, frame_cnn {c:8.1f} frames/s")


if __name__ == "__main__":
    main()
