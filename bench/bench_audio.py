"""Audio benchmark: seconds of audio processed per second of compute, per core.

    python bench/bench_audio.py [--seconds 120] [--archs Cnn14,Cnn14_16k,MobileNetV1] [--skip-taggers]

1. Loudness + spectral features (AudioAnalyzer without a tagger) on real music from
   ../shared/data/sounds (looped) or, if absent, on noise; goal >= 100x real time.
   Baseline in the same run: K-weighting with scipy.signal.lfilter (C code) against
   the numpy block IIR used by the service.
2. Each PANNs architecture at full size with random weights, exported to ONNX and
   run through the service's tagger on 10 s windows (five 2 s segments as one batch);
   goal >= 20x real time for Cnn14. With a GPU (CUDA provider) the batch figure
   of 16 windows at once is printed too.

Numbers are per core: numpy/BLAS and onnxruntime are held to one thread and timed
by process CPU time, so other jobs on a shared host do not shrink them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.audio.analyzer import AudioAnalyzer  # noqa: E402
from services.audio.loudness import KWeighting, k_weighting_coefficients  # noqa: E402
from services.audio.tagger import OnnxTagger, TaggerConfig  # noqa: E402

RATE = 32000


def load_audio(seconds: float) -> tuple[np.ndarray, str]:
    music = REPO.parent / "shared" / "data" / "sounds" / "music_olympics.ogg"
    if music.is_file():
        import av

        with av.open(str(music)) as c:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            frames = [f for frame in c.decode(audio=0) for f in resampler.resample(frame)]
        x = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
        source = "music_olympics.ogg (looped)"
    else:
        x = (np.random.default_rng(0).standard_normal(RATE * 30) * 0.1).astype(np.float32)
        source = "white noise (shared data absent)"
    reps = int(np.ceil(seconds * RATE / x.size))
    return np.tile(x, reps)[: int(seconds * RATE)], source


def best_of(fn, repeats: int = 3) -> float:
    """Least CPU time of this process over `repeats` runs.

    With one thread, CPU time is the time the work held a core; on a host shared with
    other jobs wall time would also count the waits for a core.
    """
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def bench_features(audio: np.ndarray) -> None:
    seconds = audio.size / RATE

    def run() -> None:
        analyzer = AudioAnalyzer(RATE)
        for start in range(0, audio.size, RATE // 2):  # 0.5 s chunks, as ingest might send
            analyzer.push(audio[start : start + RATE // 2], start / RATE)
        analyzer.flush()

    elapsed = best_of(run)
    print(f"loudness+spectral (AudioAnalyzer, no tagger): {seconds / elapsed:8.1f}x real time  (goal >= 100x)")

    kw = KWeighting(RATE)
    ours = best_of(lambda: kw.process(audio))
    print(f"  K-weighting, numpy block IIR:               {seconds / ours:8.1f}x real time")
    try:
        from scipy.signal import lfilter
    except ImportError:
        print("  K-weighting, scipy lfilter baseline:        (scipy not installed)")
        return
    (b1, a1), (b2, a2) = k_weighting_coefficients(RATE)
    x64 = audio.astype(np.float64)
    theirs = best_of(lambda: lfilter(b2, a2, lfilter(b1, a1, x64)))
    print(f"  K-weighting, scipy lfilter baseline:        {seconds / theirs:8.1f}x real time  (ours/baseline = {theirs / ours:.2f})")


def bench_taggers(audio: np.ndarray, archs: list[str], windows: int) -> None:
    import torch

    from training.audio.convert_panns import export
    from training.audio.panns import build

    torch.manual_seed(0)
    torch.set_num_threads(1)
    window = audio[: 10 * RATE]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            path = Path(tmp) / f"{arch}.onnx"
            export(build(arch), arch, path)
            tagger = OnnxTagger(TaggerConfig(path=path, kind="panns", intra_threads=1))
            tagger.tag(window, RATE)  # warm-up
            elapsed = best_of(lambda: [tagger.tag(window, RATE) for _ in range(windows)], repeats=2)
            rt = windows * 10.0 / elapsed
            goal = "  (goal >= 20x)" if arch == "Cnn14" else ""
            print(f"tagger {arch:12s} full size, ONNX {tagger.provider}, 1 thread: {rt:8.1f}x real time{goal}")
            if tagger.provider == "cuda":
                batch = np.stack([tagger.frames(window)] * 16).reshape(-1, tagger.frames(window).shape[1])
                session, name = tagger._session, tagger._input
                session.run(None, {name: batch})
                t = best_of(lambda: session.run(None, {name: batch}), repeats=3)
                print(f"  GPU batch of 16 windows (80 x 2 s segments): {160.0 / t:8.1f}x real time")
            path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description="audio throughput benchmark")
    parser.add_argument("--seconds", type=float, default=120.0, help="audio seconds for the feature benchmark")
    parser.add_argument("--archs", default="Cnn14,Cnn14_16k,MobileNetV1")
    parser.add_argument("--windows", type=int, default=3, help="10 s windows per tagger timing")
    parser.add_argument("--skip-taggers", action="store_true")
    args = parser.parse_args()
    audio, source = load_audio(args.seconds)
    print(f"audio: {source}, {audio.size / RATE:.0f} s at {RATE} Hz; CPU threads: 1")
    bench_features(audio)
    if not args.skip_taggers:
        bench_taggers(audio, [a for a in args.archs.split(",") if a], args.windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
