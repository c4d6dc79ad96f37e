"""Is a picture black? Luma of a sampled RGB frame on a sparse grid (cheap at 720p).

Black the way broadcast monitors (and FFmpeg's blackdetect) mean it: nearly every pixel is
darker than a luma threshold. A night scene or a dark game level has lit pixels somewhere (a
HUD, a lamp, a muzzle flash), so it is not black; a fade through black is, briefly, and the
incident needs `black_min_s` of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 4  # every 4th pixel of every 4th row: 57,600 of a 1280x720 frame's 921,600


@dataclass(frozen=True)
class Picture:
    mean_luma: float  # 0..255
    dark_ratio: float  # share of pixels at or below the luma threshold


def measure(rgb: np.ndarray, luma_max: float) -> Picture:
    """Mean luma (BT.709 weights) and the share of pixels no brighter than `luma_max`."""
    px = rgb[::GRID, ::GRID].astype(np.float32)
    luma = px[..., 0] * 0.2126 + px[..., 1] * 0.7152 + px[..., 2] * 0.0722
    return Picture(float(luma.mean()), float(np.count_nonzero(luma <= luma_max)) / luma.size)
