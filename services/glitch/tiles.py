"""The grid of square tiles the classifier looks at, so thin stripes and small smeared blocks
keep their full-resolution detail (no downscale of the whole frame).

A frame of W x H is covered by ceil(W/T) x ceil(H/T) tiles of T x T pixels (T = 224), spread
evenly so the first starts at 0 and the last ends at the border (neighbours overlap a little).
A frame smaller than a tile in a dimension is padded by repeating its edge.
"""

from __future__ import annotations

import math

import numpy as np

TILE = 224


def _starts(length: int, tile: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def grid(height: int, width: int, tile: int = TILE) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the tiles covering a height x width frame."""
    if height < 1 or width < 1:
        raise ValueError(f"frame of {width}x{height} has no pixels")
    return [(y, x) for y in _starts(height, tile) for x in _starts(width, tile)]


def shape(height: int, width: int, tile: int = TILE) -> tuple[int, int]:
    """(tile rows, tile columns) of the grid covering a height x width frame."""
    return len(_starts(height, tile)), len(_starts(width, tile))


def cut(frame: np.ndarray, tile: int = TILE) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """RGB frame [H,W,3] uint8 -> tiles [N,tile,tile,3] and their corners."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame [H,W,3], got shape {frame.shape}")
    h, w, _ = frame.shape
    if h < tile or w < tile:
        frame = np.pad(frame, ((0, max(0, tile - h)), (0, max(0, tile - w)), (0, 0)), mode="edge")
    corners = grid(h, w, tile)
    tiles = np.stack([frame[y : y + tile, x : x + tile] for y, x in corners])
    return tiles, corners
