"""Audio benchmark: seconds of audio processed per second of compute, per core.

    python bench/bench_audio.py [--seconds 120] [--archs Cnn14,Cnn14_16k,MobileNetV1] [--int8-archs Cnn14]
                                [--windows 3] [--skip-features] [--skip-taggers]

1. Loudness + spectral features (AudioAnalyzer without a tagger) on real music from
   ../shared/data/sounds (looped) or, if absent, on noise; goal >= 100x real time.
   Baseline in the same run: K-weighting with scipy.signal.lfilter (C code) against
   the numpy block IIR used by the service.
2. Each PANNs architecture at full size with random weights (panns.randomize:
   variance-preserving, so outputs depend on the audio), exported to ONNX and
   run through the service's tagger on 10 s windows (five 2 s segments as one batch);
   goal >= 20x real time for Cnn14. With a GPU (CUDA provider) the batch figure
   of 16 windows at once is printed too.
3. For --int8-archs (default Cnn14): the same weights quantized to int8 (QDQ) by
   training/audio/quantize.py, calibrated on ../shared/data/sounds minus the files in
   quantize.SHARED_SOUNDS_HOLDOUT; timed alternately with its fp32 twin (ratio
   int8/fp32), and its agreement with fp32 on the held-out files.

Numbers are per core: numpy/BLAS and onnxruntime are held to one thread and timed
by process CPU time, so other jobs on a shared host do not shrink them (they still
share caches and memory bandwidth: the load average is printed next to the figures).
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
        from training.audio.quantize import decode

        x = decode(music, RATE)
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


def load_average() -> str:
    return "load average %.2f" % os.getloadavg()[0]


def bench_taggers(audio: np.ndarray, archs: list[str], int8_archs: list[str], windows: int) -> None:
    import torch

    from training.audio import quantize
    from training.audio.convert_panns import export
    from training.audio.panns import build, randomize

    torch.manual_seed(0)
    torch.set_num_threads(1)
    window = audio[: 10 * RATE]
    sounds = REPO.parent / "shared" / "data" / "sounds"
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            path = Path(tmp) / f"{arch}.onnx"
            export(randomize(build(arch), seed=0), arch, path)
            tagger = OnnxTagger(TaggerConfig(path=path, kind="panns", intra_threads=1))
            goal = "  (goal >= 20x)" if arch == "Cnn14" else ""
            int8 = arch in int8_archs and sounds.is_dir()
            if arch in int8_archs and not int8:
                print(f"tagger {arch}: int8 skipped, no calibration audio at {sounds}")
            if int8:
                calibration, held_out = quantize.split_sounds(sounds, quantize.SHARED_SOUNDS_HOLDOUT)
                int8_path = quantize.quantize_tagger(path, Path(tmp) / f"{arch}.int8.onnx", calibration)
                tagger8 = OnnxTagger(TaggerConfig(path=int8_path, kind="panns", intra_threads=1))
                rt32, rt8 = compare(tagger, tagger8, window, windows)
                print(f"tagger {arch:12s} full size, ONNX {tagger.provider}, 1 thread, fp32: {rt32:8.1f}x real time{goal}  [{load_average()}]")
                print(f"tagger {arch:12s} full size, ONNX {tagger8.provider}, 1 thread, int8: {rt8:8.1f}x real time{goal}  [{load_average()}]")
                print(f"  int8/fp32 speed: {rt8 / rt32:.2f}")
                figures = quantize.agreement(path, int8_path, held_out)
                print(f"  int8 vs fp32, calibrated on {len(calibration)} files, checked on {', '.join(p.name for p in held_out)}:")
                print(f"  {quantize.format_agreement(figures)}")
                int8_path.unlink()
            else:
                tagger.tag(window, RATE)  # warm-up
                elapsed = best_of(lambda: [tagger.tag(window, RATE) for _ in range(windows)], repeats=2)
                rt = windows * 10.0 / elapsed
                print(f"tagger {arch:12s} full size, ONNX {tagger.provider}, 1 thread: {rt:8.1f}x real time{goal}  [{load_average()}]")
            if tagger.provider == "cuda":
                batch = np.stack([tagger.frames(window)] * 16).reshape(-1, tagger.frames(window).shape[1])
                session, name = tagger._session, tagger._input
                session.run(None, {name: batch})
                t = best_of(lambda: session.run(None, {name: batch}), repeats=3)
                print(f"  GPU batch of 16 windows (80 x 2 s segments): {160.0 / t:8.1f}x real time")
            path.unlink()


def compare(fp32: OnnxTagger, int8: OnnxTagger, window: np.ndarray, windows: int, repeats: int = 3) -> tuple[float, float]:
    """x real time of two taggers, timed in turn so that a change of load hits both alike."""
    fp32.tag(window, RATE), int8.tag(window, RATE)  # warm-up
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, tagger in enumerate((fp32, int8)):
            best[i] = min(best[i], best_of(lambda: [tagger.tag(window, RATE) for _ in range(windows)], repeats=1))
    return windows * 10.0 / best[0], windows * 10.0 / best[1]


def main() -> int:
    parser = argparse.ArgumentParser(description="audio throughput benchmark")
    parser.add_argument("--seconds", type=float, default=120.0, help="audio seconds for the feature benchmark")
    parser.add_argument("--archs", default="Cnn14,Cnn14_16k,MobileNetV1")
    parser.add_argument("--int8-archs", default="Cnn14", help="archs also timed quantized to int8 ('' for none)")
    parser.add_argument("--windows", type=int, default=3, help="10 s windows per tagger timing")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--skip-taggers", action="store_true")
    args = parser.parse_args()
    audio, source = load_audio(args.seconds)
    print(f"audio: {source}, {audio.size / RATE:.0f} s at {RATE} Hz; CPU threads: 1; {load_average()}")
    if not args.skip_features:
        bench_features(audio)
    if not args.skip_taggers:
        split = lambda text: [a for a in text.split(",") if a]  # noqa: E731
        bench_taggers(audio, split(args.archs), split(args.int8_archs), args.windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
