"""Glitch benchmark: detector frames per second per core, and its cost as a fraction of decoding.

The detector's work per sampled frame is: cut the frame into 224x224 tiles, run glitch_cnn.onnx
on them (onnxruntime, one intra-op thread = one core), and the debouncer. The baseline is
decoding the same media with PyAV on one thread, measured in the same run on the real
Big Buck Bunny clip (1280x720 H.264, 25 fps): the ratio says what the detector at the default
2 fps sampling adds to ingest's decode of every frame. Big Buck Bunny's frames stay under the
shear check's gate, so that check is also timed alone on real game frames (openarena_dm2, which
often pass it), against the same run's detector time per 720p frame.

    .venv/bin/python bench/bench_glitch.py [--repeat 3]

Times are CPU seconds of this process (time.process_time), so other work on a shared machine
does not inflate them as much as wall time would.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np

from services.glitch import shear
from services.glitch.classifier import GlitchClassifier
from services.glitch.detector import Signal, StreamDetector
from services.glitch.tiles import grid

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media"
SAMPLE_FPS = 2.0


def cpu_best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def decode_frames(path: Path, every: int = 1) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(s)) if i % every == 0]
        return frames, float(s.average_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bbb = MEDIA / "bigbuckbunny.mp4"
    frames, fps = decode_frames(bbb)

    def decode() -> None:
        with av.open(str(bbb)) as c:
            c.streams.video[0].codec_context.thread_count = 1
            for _ in c.decode(video=0):
                pass

    decode_s = cpu_best(decode, args.repeat)
    media_s = len(frames) / fps
    print(f"baseline: PyAV decode of {bbb.name} ({frames[0].shape[1]}x{frames[0].shape[0]}, {len(frames)} frames, 1 thread): "
          f"{len(frames) / decode_s:.0f} frames/s, {decode_s / media_s:.3f} CPU s per media s")

    clf = GlitchClassifier(intra_threads=1, max_batch=32)
    clf.warm_up()
    for label, size in (("1280x720", (720, 1280)), ("640x360", (360, 640))):
        sample = [f if f.shape[:2] == size else av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=size[1], height=size[0]).to_ndarray()
                  for f in frames[:: max(1, int(fps / SAMPLE_FPS))]]

        def detect() -> None:
            det = StreamDetector()
            for i, (img, score) in enumerate(zip(sample, clf.classify(sample))):
                det.add_frame(i / SAMPLE_FPS, score, img)
                det.add_signals([Signal(i / SAMPLE_FPS)])
                det.advance()
            det.finish()

        detect_s = cpu_best(detect, args.repeat)
        per_frame = detect_s / len(sample)
        cost = per_frame * SAMPLE_FPS / (decode_s / media_s)
        print(f"detector {label} ({len(grid(*size))} tiles/frame, 1 thread): {1 / per_frame:.1f} frames/s per core, "
              f"{per_frame * 1000:.1f} ms/frame; at {SAMPLE_FPS:g} fps sampling = {cost:.2f}x the decode of the same media "
              f"({per_frame * SAMPLE_FPS:.3f} CPU s per media s)")
        if label == "1280x720":
            detect_720p = per_frame

    game, _ = decode_frames(MEDIA / "openarena_dm2.mp4", every=60)
    shear_s = cpu_best(lambda: [shear.measure(f) for f in game], args.repeat) / len(game)
    print(f"shear check on {len(game)} openarena_dm2 frames (1280x720): {shear_s * 1000:.1f} ms/frame when it runs, "
          f"{shear_s / detect_720p:.2f}x the detector's time per 720p frame above")


if __name__ == "__main__":
    main()
