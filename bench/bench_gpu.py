"""The models on a GPU: frames per second per model with onnxruntime's CUDA provider, and 1080p30 streams per GPU.

Runs only where onnxruntime lists CUDAExecutionProvider and an NVIDIA device is visible
(streamsight.inference.gpu_visible); anywhere else it says that it measured nothing and exits 0.

Each shipped vision and glitch model is run on random input of the shape the services feed it,
at several batch sizes, with the CUDA provider alone (no CPU fallback: a session that did not
get CUDA is an error here), and with the CPU provider at batch 8 in the same run as the baseline.
Inputs are numpy arrays, so host-to-device copies are counted, as in the services.

Streams per GPU: a stream asks the models for, each second (ingest's defaults, whatever the
source's resolution, since ingest scales before it sends): `flow_fps` optical-flow pairs at
`flow_width` (16:9), as many 64x64 motion-CNN images (one per pair), `cnn_fps` frame-CNN frames
and `glitch_fps` glitch-classifier frames at 224x224. GPU seconds per stream-second = sum of
rate / (frames per second at the best batch); streams per GPU = 1 / that. Decoding (CPU, in
ingest) is not counted: the figure is the models' bound only.

    .venv/bin/python bench/bench_gpu.py [--seconds 2] [--batches 1 8 32 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from streamsight.inference import CPU, CUDA, gpu_visible

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # services/ beside streamsight/


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    inputs: Callable[[int], dict[str, np.ndarray]]  # batch -> feed
    rate: float  # inferences one stream asks for each second


def models() -> list[Model]:
    from services.ingest.settings import IngestSettings

    fields = IngestSettings.model_fields
    flow_fps, cnn_fps, glitch_fps = (fields[k].default for k in ("flow_fps", "cnn_fps", "glitch_fps"))
    width = fields["flow_width"].default
    height = round(width * 9 / 16)
    rng = np.random.default_rng(0)

    def rgb(side: int, name: str) -> Callable[[int], dict[str, np.ndarray]]:
        return lambda b: {name: rng.random((b, 3, side, side), dtype=np.float32)}

    def flow(b: int) -> dict[str, np.ndarray]:
        return {"frame1": rng.random((b, 1, height, width), dtype=np.float32),
                "frame2": rng.random((b, 1, height, width), dtype=np.float32)}

    vision, glitch = ROOT / "services" / "vision" / "models", ROOT / "services" / "glitch" / "models"
    return [
        Model(f"flow {width}x{height}", vision / "flow.onnx", flow, flow_fps),
        Model("motion_cnn 64x64", vision / "motion_cnn.onnx", rgb(64, "image"), flow_fps),
        Model("frame_cnn 224x224", vision / "frame_cnn.onnx", rgb(224, "rgb"), cnn_fps),
        Model("glitch_cnn 224x224", glitch / "glitch_cnn.onnx", rgb(224, "rgb"), glitch_fps),
    ]


def session(path: Path, provider: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
    if sess.get_providers()[0] != provider:
        raise SystemExit(f"{path.name}: asked for {provider}, got {sess.get_providers()}")
    return sess


def frames_per_second(sess: ort.InferenceSession, feed: dict[str, np.ndarray], batch: int, seconds: float) -> float:
    for _ in range(3):  # warm-up: kernels chosen, memory allocated
        sess.run(None, feed)
    runs, started = 0, time.perf_counter()
    while True:
        sess.run(None, feed)
        runs += 1
        took = time.perf_counter() - started
        if took >= seconds:
            return runs * batch / took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per model and batch")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    providers = ort.get_available_providers()
    if CUDA not in providers or not gpu_visible():
        why = "this onnxruntime has no CUDA provider" if CUDA not in providers else "no NVIDIA device is visible"
        print(f"bench_gpu: measured nothing: {why} (onnxruntime {ort.__version__}, providers {providers})")
        return 0
    print(f"onnxruntime {ort.__version__}, CUDA provider; {args.seconds:g} s per measure; CPU baseline at batch 8")
    print(f"{'model':<22}" + "".join(f"{'GPU b=' + str(b):>12}" for b in args.batches) + f"{'CPU b=8':>10}{'GPU/CPU':>9}{'per stream':>12}")
    gpu_s_per_stream_s = 0.0
    for model in models():
        gpu = session(model.path, CUDA)
        rates = [frames_per_second(gpu, model.inputs(b), b, args.seconds) for b in args.batches]
        cpu = frames_per_second(session(model.path, CPU), model.inputs(8), 8, args.seconds)
        best = max(rates)
        gpu_s_per_stream_s += model.rate / best
        print(f"{model.name:<22}" + "".join(f"{r:>12.0f}" for r in rates) + f"{cpu:>10.0f}{best / cpu:>9.1f}{model.rate:>10g}/s")
    print(f"GPU seconds per stream-second (models only, best batch): {gpu_s_per_stream_s:.4f}; "
          f"1080p30 streams per GPU by the models: {1 / gpu_s_per_stream_s:.0f} (decoding not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
