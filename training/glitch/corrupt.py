"""Synthetic picture corruption applied to clean decoded frames, with a per-pixel damage mask.

* Stripes, the published stride method: a frame is turned into raw YUV420 (I420) bytes and
  read back with a wrong width (w +- 1..n: rows shear, stripes slant left or right) or a wrong
  height (h +- n: the chroma planes start in the wrong place, colour bands and smears). The
  bytes come from a raw stream of consecutive frames, so a read that runs past the frame takes
  the next frame's bytes, as a player reading a raw file with the wrong size does.
* Green: the YUV planes zeroed (what a decoder shows for a missing buffer), over the whole
  frame or a band of macroblock rows.
* Grey: luma and chroma set to 128 (FFmpeg's fill for a missing reference), whole frame or band.

Every function returns the corrupted RGB frame (same size as the input) and a float mask in
[0, 1] of where the picture was damaged, which the dataset uses to label tiles.
"""

from __future__ import annotations

import av
import numpy as np

KINDS = ("clean", "stripes", "macroblocking", "green", "grey")


def rgb_to_i420(rgb: np.ndarray) -> bytes:
    """RGB [H,W,3] (even H, W) -> I420 bytes via swscale (BT.601, limited range)."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").to_ndarray().tobytes()


def i420_planes(buf: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read Y, U, V planes of a w x h I420 picture from the start of `buf` (zero-padded if short)."""
    cw, ch = (w + 1) // 2, (h + 1) // 2
    need = w * h + 2 * cw * ch
    if len(buf) < need:
        buf = np.concatenate([buf, np.zeros(need - len(buf), np.uint8)])
    y = buf[: w * h].reshape(h, w)
    u = buf[w * h : w * h + cw * ch].reshape(ch, cw)
    v = buf[w * h + cw * ch : need].reshape(ch, cw)
    return y, u, v


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV (chroma subsampled 2x2) -> RGB uint8; any width or height."""
    h, w = y.shape
    uu = np.repeat(np.repeat(u, 2, 0), 2, 1)[:h, :w].astype(np.float32) - 128.0
    vv = np.repeat(np.repeat(v, 2, 0), 2, 1)[:h, :w].astype(np.float32) - 128.0
    yy = (y.astype(np.float32) - 16.0) * 1.164
    rgb = np.stack([yy + 1.596 * vv, yy - 0.392 * uu - 0.813 * vv, yy + 2.017 * uu], axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """RGB scaled to w x h (area filter), as a player shows a picture read at the wrong size."""
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(width=w, height=h, interpolation="AREA").to_ndarray()


def read_as(frame: np.ndarray, next_frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame's I420 bytes (then the next frame's, as in a raw file) read as a width x height picture."""
    raw = np.frombuffer(rgb_to_i420(frame) + rgb_to_i420(next_frame), np.uint8)
    return yuv_to_rgb(*i420_planes(raw, width, height))


def wrong_stride(frame: np.ndarray, next_frame: np.ndarray, rng: np.random.Generator, max_dw: int = 64, max_dh: int = 96,
                 height_share: float = 0.35, small_width_share: float = 0.5) -> tuple[np.ndarray, np.ndarray, str]:
    """Read the frame's I420 bytes back with a wrong width or height; returns (rgb, mask, what).

    A wrong height comes `height_share` of the time; a wrong width is off by 1..8 pixels
    `small_width_share` of the time, by up to `max_dw` otherwise.
    """
    h, w, _ = frame.shape
    if rng.random() >= height_share:
        d = int(rng.integers(1, max_dw + 1)) * int(rng.choice([-1, 1]))
        if rng.random() < small_width_share:
            d = int(np.sign(d)) * int(rng.integers(1, 9))  # small errors are the common case (padding, odd widths)
        ww, hh, what = w + d, h, f"width{d:+d}"
    else:
        d = int(rng.integers(8, max_dh + 1)) * int(rng.choice([-1, 1]))  # |d| < 8 only tints the picture
        ww, hh, what = w, h + d, f"height{d:+d}"
    return resize(read_as(frame, next_frame, ww, hh), w, h), np.ones((h, w), np.float32), what


def _band(rng: np.random.Generator, h: int) -> tuple[int, int]:
    """Rows [r0, r1) of a band aligned to 16-row macroblock rows, or the bottom of the frame."""
    mb = max(1, h // 16)
    if rng.random() < 0.5:  # the picture stops part-way: the rest is filled
        r0 = int(rng.integers(1, mb)) * 16
        return r0, h
    rows = int(rng.integers(1, max(2, mb // 3)))
    r0 = int(rng.integers(0, mb - rows)) * 16
    return r0, min(h, r0 + rows * 16)


def fill(frame: np.ndarray, rng: np.random.Generator, kind: str, whole: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Green (zeroed YUV) or grey (YUV 128) over the whole frame or a band of macroblock rows."""
    h, w, _ = frame.shape
    planes = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuv420p").to_ndarray()
    y = planes[:h].copy()
    u = planes[h : h + h // 4].reshape(h // 2, w // 2).copy()
    v = planes[h + h // 4 :].reshape(h // 2, w // 2).copy()
    r0, r1 = (0, h) if whole else _band(rng, h)
    value = 0 if kind == "green" else 128
    if kind == "grey" and rng.random() < 0.3:
        value = int(rng.integers(100, 156))  # some decoders fill with another neutral level
    y[r0:r1] = value
    u[r0 // 2 : (r1 + 1) // 2] = 0 if kind == "green" else 128
    v[r0 // 2 : (r1 + 1) // 2] = 0 if kind == "green" else 128
    mask = np.zeros((h, w), np.float32)
    mask[r0:r1] = 1.0
    return yuv_to_rgb(y, u, v), mask, f"{kind}:{'frame' if whole else f'rows{r0}-{r1}'}"


VISIBLE = 24.0  # mean absolute RGB difference (0-255) from which a changed pixel counts as damaged


def corrupt(frame: np.ndarray, next_frame: np.ndarray, kind: str, rng: np.random.Generator, **stride) -> tuple[np.ndarray, np.ndarray, str]:
    """Apply one synthetic kind: 'stripes', 'green' or 'grey' (whole frame 35 % of the time).

    `stride` goes to wrong_stride (the mix of wrong widths and heights).

    The mask keeps only pixels that visibly changed: a shear of a flat area or a grey band
    over grey content leaves those pixels as they were, and a tile of them looks clean.
    """
    if kind == "stripes":
        bad, mask, what = wrong_stride(frame, next_frame, rng, **stride)
    elif kind in ("green", "grey"):
        bad, mask, what = fill(frame, rng, kind, whole=bool(rng.random() < 0.35))
    else:
        raise ValueError(f"unknown synthetic corruption {kind!r}; use stripes, green or grey")
    visible = np.abs(bad.astype(np.int16) - frame.astype(np.int16)).mean(axis=2) > VISIBLE
    return bad, mask * visible, what
