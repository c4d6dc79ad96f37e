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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

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
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        diff = convert(args.checkpoint, args.arch, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.arch}); max |onnx - torch| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
