"""JPEG thumbnails of glitch frames with FFmpeg's mjpeg encoder through PyAV (no new dependency)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def jpeg(rgb: np.ndarray, max_width: int = 320) -> bytes:
    """RGB [H,W,3] uint8 -> JPEG bytes, shrunk to at most `max_width` pixels wide (aspect kept)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 [H,W,3], got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    scale = min(1.0, max_width / w)
    tw, th = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(width=tw, height=th, format="yuvj420p")
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = tw, th, "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    packets = ctx.encode(frame) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)
