"""Flow field -> HSV image (direction as hue, magnitude as value), the motion CNN's input.

Plain numpy so the service and the training code render exactly the same image.
Magnitudes are first normalised to a 320-pixel-wide frame (REFERENCE_WIDTH), so a flow
field computed at another width gives the same picture for the same motion.
"""

from __future__ import annotations

import numpy as np

REFERENCE_WIDTH = 320
IMAGE_SIZE = 64
VALUE_FULL_SCALE = 24.0  # pixels per frame interval (at 320 px width) that render at full brightness
# value = log(1 + magnitude) / log(1 + VALUE_FULL_SCALE): a log scale keeps the 0.5-5 px range
# (walking people vs. fast action) visible instead of crushing it near black


def area_resize(field: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Average [C,H,W] over a grid of out_h x out_w cells (area interpolation, any size)."""
    _, h, w = field.shape
    if h < out_h or w < out_w:
        rows = np.linspace(0, h - 1, out_h).round().astype(int)
        cols = np.linspace(0, w - 1, out_w).round().astype(int)
        return field[:, rows][:, :, cols]
    r = np.linspace(0, h, out_h + 1).astype(int)[:-1]
    c = np.linspace(0, w, out_w + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(field, r, axis=1), c, axis=2)
    counts = np.diff(np.append(r, h))[:, None] * np.diff(np.append(c, w))[None, :]
    return sums / counts


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0,1]) -> RGB [...,3] in [0,1]."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack((r, g, b), axis=-1)


def flow_to_hsv_image(flow: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """One flow field [2,H,W] (pixels) -> float32 RGB image [3,size,size] in [0,1]."""
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be [2,H,W], got shape {flow.shape}")
    scale = REFERENCE_WIDTH / flow.shape[2]
    small = area_resize(flow.astype(np.float32) * scale, size, size)
    u, v = small[0], small[1]
    hue = (np.arctan2(v, u) / (2.0 * np.pi)) % 1.0
    value = np.clip(np.log1p(np.hypot(u, v)) / np.log1p(VALUE_FULL_SCALE), 0.0, 1.0)
    rgb = hsv_to_rgb(hue, np.ones_like(hue), value)
    return rgb.transpose(2, 0, 1).astype(np.float32)


def flows_to_hsv_batch(flows: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Many flow fields -> [N,3,size,size] float32 batch for the motion CNN."""
    images = [flow_to_hsv_image(f) for f in flows]
    if not images:
        return np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return np.stack(images)
