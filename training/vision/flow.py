"""Dense optical flow with no learned weights: coarse-to-fine (pyramidal) Lucas-Kanade with warping.

Written in plain torch ops that export to ONNX (convolutions, grid_sample, elementwise
algebra), so the service runs it through onnxruntime. `python -m training.vision.flow`
exports services/vision/models/flow.onnx.

Method, per pyramid level from coarse to fine:
  1. warp the second frame towards the first with the current flow (bilinear grid_sample);
  2. spatial gradients Ix, Iy of the mean of the two images and the temporal difference It;
  3. Gaussian-weighted 2x2 structure tensor A and right-hand side b in every pixel's window;
  4. solve (A + lambda*I) du = -b in closed form and add du to the flow; lambda keeps
     flat, textureless pixels at the flow inherited from the coarser level;
  5. smooth the flow lightly, then upsample it (x2) for the next finer level.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 5
ITERATIONS = 2
WINDOW_SIGMA = 3.0
FLOW_SMOOTH_SIGMA = 1.0
REGULARISATION = 1e-4  # lambda, in (intensity/pixel)^2 with intensities in [0, 1]


def gaussian_taps(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


class SeparableBlur(nn.Module):
    """Depthwise separable blur with replicated borders for a fixed channel count."""

    def __init__(self, taps: torch.Tensor, channels: int) -> None:
        super().__init__()
        k = taps.numel()
        self.pad = k // 2
        self.channels = channels
        self.register_buffer("kx", taps.view(1, 1, 1, k).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("ky", taps.view(1, 1, k, 1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        x = F.conv2d(F.pad(x, (p, p, 0, 0), mode="replicate"), self.kx, groups=self.channels)
        return F.conv2d(F.pad(x, (0, 0, p, p), mode="replicate"), self.ky, groups=self.channels)


class PyramidalLucasKanade(nn.Module):
    """Two gray frames [N,1,H,W] (0..255) -> flow [N,2,H,W] in pixels (dx, dy), frame1 -> frame2."""

    def __init__(
        self,
        levels: int = LEVELS,
        iterations: int = ITERATIONS,
        window_sigma: float = WINDOW_SIGMA,
        smooth_sigma: float = FLOW_SMOOTH_SIGMA,
        regularisation: float = REGULARISATION,
    ) -> None:
        super().__init__()
        self.levels = levels
        self.iterations = iterations
        self.regularisation = regularisation
        self.pyramid_blur = SeparableBlur(torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0, 2)
        self.window = SeparableBlur(gaussian_taps(window_sigma), 5)
        self.smooth = SeparableBlur(gaussian_taps(smooth_sigma), 2)
        self.register_buffer("dx", torch.tensor([-0.5, 0.0, 0.5]).view(1, 1, 1, 3), persistent=False)
        self.register_buffer("dy", torch.tensor([-0.5, 0.0, 0.5]).view(1, 1, 3, 1), persistent=False)

    def gradients(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gx = F.conv2d(F.pad(img, (1, 1, 0, 0), mode="replicate"), self.dx)
        gy = F.conv2d(F.pad(img, (0, 0, 1, 1), mode="replicate"), self.dy)
        return gx, gy

    @staticmethod
    def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Sample img at (x + u, y + v): brings frame 2 back onto frame 1's grid."""
        h, w = img.shape[-2], img.shape[-1]
        ys = torch.arange(h, dtype=img.dtype, device=img.device)
        xs = torch.arange(w, dtype=img.dtype, device=img.device)
        # align_corners=True maps pixel centres 0 and size-1 to -1 and 1; the last index is
        # taken from the tensor (not a Python int) so the exported graph stays size-agnostic
        sx = 2.0 / xs[-1:].clamp(min=1.0)
        sy = 2.0 / ys[-1:].clamp(min=1.0)
        gx = (xs.view(1, 1, -1) + flow[:, 0]) * sx - 1.0
        gy = (ys.view(1, -1, 1) + flow[:, 1]) * sy - 1.0
        grid = torch.stack((gx, gy), dim=-1)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def refine(self, i1: torch.Tensor, i2: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        for _ in range(self.iterations):
            i2w = self.warp(i2, flow)
            gx, gy = self.gradients(0.5 * (i1 + i2w))
            gt = i2w - i1
            terms = self.window(torch.cat((gx * gx, gx * gy, gy * gy, gx * gt, gy * gt), dim=1))
            a11 = terms[:, 0:1] + self.regularisation
            a12 = terms[:, 1:2]
            a22 = terms[:, 2:3] + self.regularisation
            b1 = terms[:, 3:4]
            b2 = terms[:, 4:5]
            det = a11 * a22 - a12 * a12
            du = (a12 * b2 - a22 * b1) / det
            dv = (a12 * b1 - a11 * b2) / det
            flow = flow + torch.cat((du, dv), dim=1)
        return self.smooth(flow)

    def forward(self, frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        pair = torch.cat((frame1, frame2), dim=1) * (1.0 / 255.0)
        pyramid = [pair]
        for _ in range(self.levels - 1):
            pyramid.append(self.pyramid_blur(pyramid[-1])[:, :, ::2, ::2])
        coarse = pyramid[-1]
        flow = torch.zeros_like(coarse)
        for level in range(self.levels - 1, -1, -1):
            images = pyramid[level]
            if level != self.levels - 1:
                flow = 2.0 * F.interpolate(flow, size=(images.shape[-2], images.shape[-1]), mode="bilinear", align_corners=False)
            flow = self.refine(images[:, 0:1], images[:, 1:2], flow)
        return flow


def export(path: Path, opset: int = 17) -> None:
    model = PyramidalLucasKanade().eval()
    a = torch.rand(2, 1, 180, 320) * 255
    b = torch.rand(2, 1, 180, 320) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (a, b),
        str(path),
        input_names=["frame1", "frame2"],
        output_names=["flow"],
        dynamic_axes={"frame1": {0: "batch", 2: "height", 3: "width"},
                      "frame2": {0: "batch", 2: "height", 3: "width"},
                      "flow": {0: "batch", 2: "height", 3: "width"}},
        opset_version=opset,
        dynamo=False,
    )


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[2] / "services" / "vision" / "models" / "flow.onnx"
    export(out)
