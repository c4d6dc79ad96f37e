"""The glitch classifiers compared for services/glitch: a small MobileNetV2-style net trained
from scratch (`TinyGlitchNet`, EfficientNetV2-style fused and depthwise MBConv blocks, the shipped one) and EfficientNet-Lite0 fine-tuned from the
ImageNet weights (`lite0`, the comparison; see MODEL.md for the measurements).

Both take RGB tiles float32 [N,3,224,224] in 0..255 and normalise inside, (x - 127) / 128 as
TensorFlow's EfficientNet-Lite does, and return logits over the five kinds.
The tiny net pools its last feature map by mean and max: a few smeared macroblocks in a
corner of a tile are a local pattern that a mean alone would dilute.
"""

from __future__ import annotations

import torch
from torch import nn

MEAN, STD = 127.0, 128.0


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(_conv_bn(cin, mid, 1), _conv_bn(mid, mid, 3, stride, groups=mid), _conv_bn(mid, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class FusedMBConv(nn.Module):
    """EfficientNetV2's fused block: one 3x3 expand conv, 1x1 project; residual when shapes match.

    Used for the high-resolution stages, where a depthwise conv saves multiply-adds but not time
    (on CPU, and above all in PyTorch's CPU backward pass, depthwise convolutions are slow).
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 2) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(_conv_bn(cin, mid, 3, stride), _conv_bn(mid, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class TinyGlitchNet(nn.Module):
    """EfficientNetV2-style small net (fused blocks early, depthwise MBConv late), ~0.2 M parameters."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2)  # 112
        self.blocks = nn.Sequential(
            FusedMBConv(16, 24, 2),  # 56
            FusedMBConv(24, 32, 2),  # 28
            InvertedResidual(32, 64, 2),  # 14
            InvertedResidual(64, 64, 1),
            InvertedResidual(64, 96, 2),  # 7
            InvertedResidual(96, 96, 1),
        )
        self.head = _conv_bn(96, 192, 1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(384, classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem((rgb - MEAN) * (1.0 / STD))))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.fc(self.drop(pooled))


class Lite0Glitch(nn.Module):
    """EfficientNet-Lite0 with ImageNet weights and a new 5-way head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        from training.vision.export_frame_cnn import load_lite0

        self.net = load_lite0()
        self.net._fc = nn.Linear(self.net._fc.in_features, classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        features = self.net.extract_features((rgb - MEAN) * (1.0 / STD))
        return self.net._fc(features.mean(dim=(2, 3)))


class WithSoftmax(nn.Module):
    """The exported graph: tiles in, class probabilities out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(rgb), dim=1)


def build(arch: str) -> nn.Module:
    if arch == "tiny":
        return TinyGlitchNet()
    if arch == "lite0":
        return Lite0Glitch()
    raise ValueError(f"unknown architecture {arch!r}; use tiny or lite0")
