"""Row shear: the model-free sign of a picture read with a wrong width (the stride method's stripes).

A frame read with a width off by d pixels starts every row d bytes later than the row above, so
neighbouring rows show the same content shifted by d pixels: the whole picture is sheared. On
half-resolution luma, the shift that best aligns row r+1 with row r is then d for nearly every
textured row pair; the chroma planes, read with half the width error, shear at half that slope.
Content can shear too (diagonal stripes, hatching), but then its colour shears with it.

`measure` finds the most common clear shift between neighbouring rows and the share of textured
row pairs that agree with it, for luma and for chroma; `wrong_width` says whether that looks like a
wrong width: a luma shift of at least MIN_SHIFT pixels in at least MIN_SHARE of the row pairs,
and no colour shearing at the same slope. The classifier only asks for it when a tile already
looks like stripes (it costs about 11 ms per 720p frame); the measurements are in models/MODEL.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from services.glitch.chroma import ycbcr

ROWS = 64  # row pairs sampled over the frame's height
# Half-resolution pixels: width errors up to 64, the widest the training plants (corrupt.wrong_stride) draw.
# It was 24, on the belief that the classifier sees wider errors well; on real game footage it scored
# openarena_dm2 read 37 and 46 pixels too narrow at 0.91-0.945 and missed both (held-out seed 21).
MAX_SHIFT = 64
STEP = 2  # every 2nd column of a row is compared
FIXED = 8  # planes are compared as int16 in 1/8 levels: 2.7x faster than float32 over 129 shifts
MIN_SHIFT = 2  # a 1-pixel shear is too close to gently sloped content
MIN_SHARE = 0.3  # read 2 pixels too narrow, vtest gave 0.31-0.45; clean development scenes up to 0.25 (past the gate)
# A row pair is textured when its typical matching cost exceeds a floor. Costs scale with the
# picture's contrast, so the floors are for a luma standard deviation of FULL_CONTRAST and
# shrink with it: with fixed floors a dark scene read with a wrong width had too few textured
# rows to measure (development seeds 5000-5599: 53 of 76 dark wrong-width incidents found, 58
# with scaled floors, no clean frame more called on 6250).
FULL_CONTRAST = 30.0
LUMA_TEXTURE, CHROMA_TEXTURE = 3.0, 2.0
SAME_SLOPE_SHARE = 0.3  # colour shearing with the luma in this share of rows: it is the content


@dataclass(frozen=True)
class Shear:
    shift: int  # luma, half-resolution pixels per half-resolution row (0: none found)
    share: float  # textured luma row pairs agreeing with it (within 1 pixel)
    chroma_shift: int
    chroma_share: float


def _votes(plane: np.ndarray, texture: float) -> tuple[int, float]:
    h, w = plane.shape
    span = min(MAX_SHIFT, w // 4)
    if h < 4 or w < 4 * span or span < 2:
        return 0, 0.0
    rows = np.linspace(0, h - 2, min(ROWS, h - 1)).astype(int)
    fixed = np.round(plane[np.concatenate([rows, rows + 1])] * FIXED).astype(np.int16)
    above = sliding_window_view(fixed[: len(rows)], w - 2 * span, axis=1)[:, :, ::STEP]  # [rows, shifts, cols]
    below = fixed[len(rows) :, span : w - span : STEP]
    cost = np.abs(above - below[:, None, :]).sum(axis=2, dtype=np.int32) / (above.shape[2] * FIXED)  # [rows, 2 * span + 1]
    best = cost.argmin(1)
    lowest, unshifted = cost.min(1), cost[:, span]
    textured = np.median(cost, 1) > texture
    if textured.sum() < 12:
        return 0, 0.0
    clear = textured & (lowest < 0.7 * unshifted) & (best != span)
    if not clear.any():
        return 0, 0.0
    shifts, counts = np.unique(best[clear], return_counts=True)
    k = int(shifts[counts.argmax()])
    return k - span, float(((np.abs(best - k) <= 1) & clear).sum() / textured.sum())


def measure(rgb: np.ndarray) -> Shear:
    """RGB [H,W,3] uint8 -> the frame's row shear, on half-resolution luma and chroma."""
    luma, cb, cr = ycbcr(rgb, 2)
    chroma = cb + cr
    contrast = min(1.0, max(float(luma.std()), 1.0) / FULL_CONTRAST)
    shift, share = _votes(luma, texture=LUMA_TEXTURE * contrast)
    chroma_shift, chroma_share = _votes(chroma, texture=CHROMA_TEXTURE * contrast)
    return Shear(shift, round(share, 3), chroma_shift, round(chroma_share, 3))


def wrong_width(shear: Shear) -> bool:
    """A luma shear like a wrong width's, not one that the colour follows (sheared content)."""
    if abs(shear.shift) < MIN_SHIFT or shear.share < MIN_SHARE:
        return False
    return not (shear.chroma_share >= SAME_SLOPE_SHARE and abs(shear.chroma_shift - shear.shift) <= 1)
