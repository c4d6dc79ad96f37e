"""Convert an official PANNs checkpoint (.pth) to an ONNX tagger for services/audio.

    python -m training.audio.convert_panns --checkpoint Cnn14_mAP=0.431.pth --arch Cnn14 --out cnn14.onnx

The official files (Zenodo record 3987831 of the PANNs authors: Cnn14_mAP=0.431.pth,
Cnn14_16k_mAP=0.438.pth, MobileNetV1_mAP=0.389.pth) store {'model': state_dict}; a
bare state dict is accepted too. They are loaded with torch.load(weights_only=True),
so no pickled code runs. The ONNX graph takes `waveform` (batch, samples) float32 at
the model's rate, contains the log-mel front end, and returns `clipwise_output`
(batch, 527) and `embedding`; batch and length are dynamic. Metadata records the
architecture and sample rate, which the service's tagger reads. After export the
ONNX output is checked against torch on a random batch.

`--int8 --calibration DIR` also writes a statically quantized twin (QDQ, int8
weights per channel, uint8 activations; front end and head stay fp32), calibrated
on the real audio files in DIR (decoded with PyAV, resampled to the model's rate,
10 s windows looped to length; see training/audio/quantize.py):

    python -m training.audio.convert_panns --checkpoint Cnn14_mAP=0.431.pth --arch Cnn14 \
        --out cnn14.onnx --int8 --calibration my_sounds/ --holdout a.ogg,b.wav

It goes to `--int8-out` (default: cnn14.int8.onnx beside --out). The files named by
`--holdout` (default: every fourth file) are kept out of calibration and used to
print the int8 model's agreement with fp32. Full-size Cnn14 with random weights,
one CPU thread (bench/bench_audio.py): int8 70.6x real time per core against fp32's
20.3x (3.47x); on the 5 held-out shared sounds, top-10 overlap 0.96, probabilities
within 0.096 (mean 0.0057), audio-dependent logit correlation 0.998, embedding
relative error 3.4 %. Details in services/audio/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.audio import quantize
from training.audio.panns import ARCHS, AUDIOSET_CLASSES, from_state_dict

OPSET = 17


def load_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The state dict inside an official PANNs checkpoint (or a bare one)."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{checkpoint} holds no state dict (expected {{'model': state_dict}})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def export(model: torch.nn.Module, arch: str, out: Path) -> None:
    fe = ARCHS[arch]
    example = torch.zeros(1, fe.sample_rate, dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (example,),
        str(out),
        dynamo=False,
        input_names=["waveform"],
        output_names=["clipwise_output", "embedding"],
        dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "clipwise_output": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=OPSET,
    )
    proto = onnx.load(str(out))
    meta = {"kind": "panns", "arch": arch, "sample_rate": str(fe.sample_rate), "classes": str(AUDIOSET_CLASSES)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def check(model: torch.nn.Module, out: Path, seconds: float = 2.0, seed: int = 0) -> float:
    """Largest |ONNX - torch| of the scores on a random batch of 2."""
    rate = model.front_end.sample_rate
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (2, int(seconds * rate))).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0].numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["clipwise_output"], {"waveform": x})
    return float(np.max(np.abs(got - expected)))


def convert(checkpoint: Path, arch: str, out: Path) -> float:
    """Load, export and verify; returns the ONNX-vs-torch difference."""
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; known: {sorted(ARCHS)}")
    model = from_state_dict(arch, load_state_dict(checkpoint))
    classes = model.fc_audioset.out_features
    if classes != AUDIOSET_CLASSES:
        raise ValueError(f"checkpoint has {classes} classes, not AudioSet's {AUDIOSET_CLASSES}")
    export(model, arch, out)
    return check(model, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="official PANNs .pth file")
    parser.add_argument("--arch", required=True, choices=sorted(ARCHS))
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--int8", action="store_true", help="also write a statically quantized int8 (QDQ) model")
    parser.add_argument("--calibration", type=Path, help="with --int8: folder of real audio files to calibrate on")
    parser.add_argument("--holdout", help="with --int8: comma-separated files of --calibration kept for the agreement check (default: every 4th)")
    parser.add_argument("--int8-out", type=Path, help="with --int8: file to write (default: <out>.int8.onnx)")
    args = parser.parse_args(argv)
    if args.int8 and args.calibration is None:
        parser.error("--int8 needs --calibration DIR (a folder of real audio files)")
    torch.manual_seed(0)
    try:
        if args.int8:  # check the folder before the slow export
            holdout = [n for n in args.holdout.split(",") if n] if args.holdout else None
            calibration, held_out = quantize.split_sounds(args.calibration, holdout)
        diff = convert(args.checkpoint, args.arch, args.out)
        print(f"wrote {args.out} ({args.arch}); max |onnx - torch| = {diff:.2e}")
        if args.int8:
            int8_out = args.int8_out or args.out.with_suffix(".int8.onnx")
            quantize.quantize_tagger(args.out, int8_out, calibration)
            figures = quantize.agreement(args.out, int8_out, held_out)
            print(f"wrote {int8_out} (int8, calibrated on {len(calibration)} files)")
            print(f"int8 vs fp32 on {', '.join(p.name for p in held_out)}:")
            print("  " + quantize.format_agreement(figures))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
