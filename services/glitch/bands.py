"""Flat fill bands: the green and grey a decoder paints where picture data is missing.

A decoder that lost a slice fills whole rows of macroblocks: zeroed YUV shows as pure green
(RGB about 0, 135, 0), FFmpeg's fill as neutral grey (YUV 128, or another neutral level). Such
a band spans the full width of the picture and is flat to within the coding noise, which
natural pictures seldom are over a full row; black letterbox bars and dark scenery (too dark
for a decoder's mid-grey) and white (too bright) are left out of the grey range. The classifier misses thin bands (16 to 32 rows
of a 224-row tile), so this model-free check runs beside it.

`find_bands(rgb)` returns the bands of one frame. A band that was already there in the
stream's previous sample is part of the picture (a grey HUD strip, a slate), not damage: the
detector only counts bands that appeared (see detector.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STEP = 2  # every 2nd row and column: bands are macroblock rows, 4x less work, same answer
MIN_ROWS = 8  # a 16-row macroblock band shrunk by ingest's downscale still has 10 rows
FLAT_STD = 4.0  # per-row standard deviation (0-255) under which a row is flat
FLAT_RANGE = 64  # a row spanning more than this (max - min of a channel) cannot be that flat in practice
GREEN = {"r_max": 40.0, "b_max": 40.0, "g_min": 90.0, "g_max": 180.0}
# Grey fill is mid-grey: FFmpeg paints Y 128 (RGB about 130) where a picture has no reference, and
# the training data plants Y 100-156 (RGB 98-163). A darker flat band is scenery: a game's fogged
# floor across the whole picture (RGB 51-76) raised grey incidents on real OpenArena footage.
GREY = {"spread_max": 10.0, "level_min": 90.0, "level_max": 220.0}


@dataclass(frozen=True)
class Band:
    """Rows [top, bottom) of one flat fill band and its colour kind ('green' or 'grey')."""

    kind: str
    top: int
    bottom: int
    level: float  # mean green (green) or grey level (grey), 0-255

    @property
    def rows(self) -> int:
        return self.bottom - self.top

    def same_as(self, other: Band, tolerance: int = 16) -> bool:
        """The same band as in another sample: same kind and level, rows within a macroblock."""
        return (self.kind == other.kind and abs(self.top - other.top) <= tolerance and abs(self.bottom - other.bottom) <= tolerance
                and abs(self.level - other.level) <= 6.0)


def row_kinds(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sampled row: flat green?, flat grey?, and its mean level, for an RGB frame [H,W,3]."""
    sampled = rgb[::STEP, ::STEP]
    # Cheap first pass on the green channel: a row whose values span more than FLAT_RANGE is not flat;
    # the float statistics are computed only for the few rows left (most rows drop out here).
    green_channel = np.ascontiguousarray(rgb[::STEP, ::4, 1])
    candidates = np.flatnonzero(green_channel.max(axis=1) - green_channel.min(axis=1) <= FLAT_RANGE)
    mean = np.zeros((len(sampled), 3), np.float32)
    flat = np.zeros(len(sampled), bool)
    if len(candidates):
        rows = sampled[candidates].astype(np.float32)
        mean[candidates] = rows.mean(axis=1)
        flat[candidates] = rows.std(axis=1).max(axis=1) < FLAT_STD
    r, g, b = mean[:, 0], mean[:, 1], mean[:, 2]
    green = flat & (r < GREEN["r_max"]) & (b < GREEN["b_max"]) & (g >= GREEN["g_min"]) & (g <= GREEN["g_max"])
    spread = np.maximum(np.abs(r - g), np.abs(g - b))
    grey = flat & (spread < GREY["spread_max"]) & (g >= GREY["level_min"]) & (g <= GREY["level_max"])
    return green, grey, g


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def find_bands(rgb: np.ndarray) -> list[Band]:
    """Flat green and grey bands of at least MIN_ROWS rows in an RGB frame, top to bottom."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB frame [H,W,3], got shape {rgb.shape}")
    green, grey, level = row_kinds(rgb)
    bands = []
    for kind, mask in (("green", green), ("grey", grey)):
        for a, b in _runs(mask):
            if (b - a) * STEP >= MIN_ROWS:
                bands.append(Band(kind, a * STEP, min(rgb.shape[0], b * STEP), round(float(level[a:b].mean()), 1)))
    return sorted(bands, key=lambda band: band.top)


def new_bands(bands: Sequence[Band], previous: Sequence[Band]) -> list[Band]:
    """The bands that were not in the previous sample."""
    return [b for b in bands if not any(b.same_as(p) for p in previous)]
