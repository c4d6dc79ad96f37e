"""Static int8 quantization of the glitch tile classifier: glitch_cnn.onnx -> glitch_cnn.int8.onnx.

onnxruntime's static quantization (QDQ format, int8 weights per output channel, uint8
activations) calibrated on tiles that the training data builder makes from training scenes
(training.glitch.dataset.scene_tiles on the first CALIB_SCENES of TRAIN_SEEDS: clean, stripes,
green, grey and packet-damage tiles, coded as the training set codes them). No validation seed
(VAL_SEEDS), no evaluation seed and no real footage is looked at, so every held-out figure
measured with the int8 model stays held out.

`python -m training.glitch.quantize` writes the model beside the fp32 one and prints its sha256,
size and how far its probabilities are from the fp32 model's on the calibration tiles. Same seeds,
same onnxruntime version: same file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from services.glitch.classifier import MODEL_DIR, MODEL_FILE
from training.glitch.dataset import TRAIN_SEEDS, _worker

INT8_FILE = "glitch_cnn.int8.onnx"
CALIB_SCENES = 16  # ~2300 tiles: the activation ranges stopped moving between 8 and 16 scenes
BATCH = 32


def calibration_tiles(scenes: int = CALIB_SCENES) -> tuple[np.ndarray, np.ndarray]:
    """Tiles [N,224,224,3] uint8 and labels from the first `scenes` training scenes."""
    seeds = list(TRAIN_SEEDS)[:scenes]
    tiles, labels, _ = _worker(seeds)
    return tiles, labels


class TileReader(CalibrationDataReader):
    """Feeds tiles to the calibrator in the service's layout (float32 NCHW, RGB 0..255)."""

    def __init__(self, tiles: np.ndarray, input_name: str, batch: int = BATCH) -> None:
        self._batches = [np.ascontiguousarray(tiles[i : i + batch].transpose(0, 3, 1, 2), dtype=np.float32) for i in range(0, len(tiles), batch)]
        self._input = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {self._input: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def quantize(src: Path, dst: Path, tiles: np.ndarray) -> None:
    """Write the int8 model of `src` to `dst`, activation ranges from `tiles` (min/max)."""
    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared))  # shapes inferred, BatchNorm folded: what the quantizer expects
        quantize_static(
            str(prepared), str(dst), TileReader(tiles, input_name),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def probabilities(path: Path, tiles: np.ndarray, threads: int = 1) -> np.ndarray:
    """The model's probabilities for tiles [N,224,224,3] uint8."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    chw = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32)
    return np.concatenate([sess.run(None, {name: chw[i : i + BATCH]})[0] for i in range(0, len(chw), BATCH)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=CALIB_SCENES, help="training scenes to calibrate on")
    parser.add_argument("--src", type=Path, default=MODEL_DIR / MODEL_FILE)
    parser.add_argument("--out", type=Path, default=MODEL_DIR / INT8_FILE)
    args = parser.parse_args(argv)
    tiles, labels = calibration_tiles(args.scenes)
    print(f"calibration: {len(tiles)} tiles, per class {np.bincount(labels, minlength=5).tolist()}", file=sys.stderr)  # noqa: T201
    quantize(args.src, args.out, tiles)
    p32, p8 = probabilities(args.src, tiles), probabilities(args.out, tiles)
    gap = np.abs((1 - p32[:, 0]) - (1 - p8[:, 0]))
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(  # noqa: T201 - a script's report
        f"{args.out.name}: {args.out.stat().st_size / 1e6:.2f} MB sha256 {digest}\n"
        f"P(not clean) int8 vs fp32 on the calibration tiles: mean |diff| {gap.mean():.4f}, max {gap.max():.4f}; "
        f"argmax agrees on {(p32.argmax(1) == p8.argmax(1)).mean():.4f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
