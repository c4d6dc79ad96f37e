"""Generated clean footage for the glitch detector, with the hard cases a corruption detector
must not fire on, encoded and decoded with PyAV H.264 like a real stream.

A scene is a sequence of RGB frames drawn in numpy/torch: a content layer (multi-scale noise
"game map", flat cartoon shapes on gradients, green fields, grey concrete, regular patterns)
seen by a moving camera, plus optional hard cases: fast pans, a scene cut, a dark scene, a fade,
film grain, a HUD (bars, boxes, text-like glyph rows, thin grid lines) and heavy but normal
compression (high CRF). `encode()` writes the frames as H.264 with a fixed GOP; `decode()` reads
a file back as RGB frames: the clean reference that damaged decodes are compared with.

Everything is driven by one `numpy.random.Generator`, so a seed gives the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

SIZES = ((640, 360), (960, 540), (1280, 720))
FPS = 25


@dataclass
class SceneSpec:
    """What a generated clean scene contains (kept for the dataset card)."""

    seed: int
    width: int
    height: int
    frames: int
    content: str
    pan_px: float
    cut_at: int | None = None
    dark: bool = False
    fade: bool = False
    grain: float = 0.0
    hud: bool = False
    crf: int = 23
    tags: list[str] = field(default_factory=list)


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> torch.Tensor:
    small = torch.from_numpy(rng.standard_normal((1, 1, max(2, h // cell), max(2, w // cell))).astype(np.float32))
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)[0, 0]


def _colour_noise_map(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A 'game map': multi-scale noise per channel, contrast and mean drawn at random."""
    out = np.empty((h, w, 3), np.float32)
    base = sum(_noise(rng, h, w, c) * s for c, s in ((96, 1.0), (24, 0.6), (6, 0.3)))
    for ch in range(3):
        tint = _noise(rng, h, w, 160) * 0.5
        out[..., ch] = ((base + tint) * float(rng.uniform(25, 60)) + float(rng.uniform(60, 190))).numpy()
    return out


def _cartoon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Flat colour regions on a smooth gradient (animation-like: large flat areas, sharp edges)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    t = (yy / h * rng.uniform(0.3, 1.0) + xx / w * rng.uniform(0, 0.5))[..., None]
    img = c0 * (1 - t) + c1 * t
    for _ in range(int(rng.integers(6, 25))):
        colour = rng.uniform(0, 255, 3)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(10, h / 3), rng.uniform(10, w / 3)
        if rng.random() < 0.5:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            mask = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        img[mask] = colour
    return img


def _field(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """Legitimately green (grass) or grey (concrete, overcast) textured content."""
    tex = (_noise(rng, h, w, 3) * 14 + _noise(rng, h, w, 40) * 25).numpy()
    if kind == "green":
        mean = np.array([rng.uniform(30, 90), rng.uniform(110, 190), rng.uniform(20, 80)], np.float32)
    else:
        g = rng.uniform(70, 180)
        mean = np.array([g, g, g], np.float32) + rng.uniform(-6, 6, 3).astype(np.float32)
    return mean + tex[..., None]


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Regular man-made patterns: stripes, hatching, checkerboards (not corruption)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(6, 40))
    angle = float(rng.uniform(0, np.pi))
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    if rng.random() < 0.5:
        wave = (np.floor(phase) % 2)
    else:
        wave = ((np.floor(xx / period) + np.floor(yy / period)) % 2)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return a * wave[..., None] + b * (1 - wave[..., None]) + _noise(rng, h, w, 50).numpy()[..., None] * 20


CONTENT = ("map", "map", "cartoon", "cartoon", "green", "grey", "pattern")


def _content(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    if kind == "map":
        return _colour_noise_map(rng, h, w)
    if kind == "cartoon":
        return _cartoon(rng, h, w)
    if kind in ("green", "grey"):
        return _field(rng, h, w, kind)
    return _pattern(rng, h, w)


_GLYPHS = None


def _glyphs(rng: np.random.Generator) -> np.ndarray:
    """40 random 5x7 bitmaps standing in for a HUD font (strokes, not real letters)."""
    g = rng.random((40, 7, 5)) < 0.45
    g[:, :, 0] |= rng.random((40, 7)) < 0.3
    return g


def _draw_hud(img: np.ndarray, rng: np.random.Generator, glyphs: np.ndarray) -> None:
    h, w, _ = img.shape
    bar_h = int(h * rng.uniform(0.04, 0.1))
    img[h - bar_h :, :, :] = img[h - bar_h :] * 0.3 + rng.uniform(0, 80, 3) * 0.7  # translucent bottom bar
    for _ in range(int(rng.integers(1, 4))):  # health/ammo bars
        y, x = int(rng.uniform(0.02, 0.9) * h), int(rng.uniform(0.02, 0.7) * w)
        bw, bh = int(w * rng.uniform(0.1, 0.25)), max(4, int(h * 0.02))
        img[y : y + bh, x : x + bw] = (20, 20, 20)
        img[y + 1 : y + bh - 1, x + 1 : x + 1 + int((bw - 2) * rng.uniform(0.1, 1))] = rng.uniform(0, 255, 3)
    scale = max(1, int(h / 240 * rng.uniform(1, 2.5)))
    colour = rng.uniform(180, 255, 3) if rng.random() < 0.7 else rng.uniform(0, 255, 3)
    for _ in range(int(rng.integers(2, 6))):  # rows of text-like glyphs
        y, x = int(rng.uniform(0.02, 0.92) * h), int(rng.uniform(0.0, 0.6) * w)
        for k in range(int(rng.integers(4, 20))):
            g = np.kron(glyphs[int(rng.integers(0, len(glyphs)))], np.ones((scale, scale), bool))
            gy, gx = g.shape
            x0 = x + k * (gx + scale)
            if y + gy > h or x0 + gx > w:
                break
            region = img[y : y + gy, x0 : x0 + gx]
            region[g] = colour
    if rng.random() < 0.4:  # minimap with thin grid lines
        s = int(min(h, w) * rng.uniform(0.18, 0.3))
        y0, x0 = 8, w - s - 8
        img[y0 : y0 + s, x0 : x0 + s] = img[y0 : y0 + s, x0 : x0 + s] * 0.4 + 40
        step = int(rng.integers(6, 20))
        img[y0 : y0 + s : step, x0 : x0 + s] = 200
        img[y0 : y0 + s, x0 : x0 + s : step] = 200


def random_spec(rng: np.random.Generator, seed: int, frames: int = 3 * FPS) -> SceneSpec:
    w, h = SIZES[int(rng.choice(len(SIZES), p=[0.45, 0.3, 0.25]))]
    spec = SceneSpec(seed=seed, width=w, height=h, frames=frames, content=str(rng.choice(CONTENT)),
                     pan_px=float(rng.choice([0.0, rng.uniform(1, 8), rng.uniform(20, 70)], p=[0.2, 0.45, 0.35])))
    if rng.random() < 0.3:
        spec.cut_at = int(rng.integers(frames // 4, 3 * frames // 4))
    spec.dark = bool(rng.random() < 0.2)
    spec.fade = bool(rng.random() < 0.1)
    spec.grain = float(rng.uniform(4, 18)) if rng.random() < 0.3 else 0.0
    spec.hud = bool(rng.random() < 0.45)
    spec.crf = int(rng.choice([18, 23, 28, 33, 38, 44], p=[0.15, 0.25, 0.2, 0.15, 0.15, 0.1]))
    spec.tags = [t for t, on in (("fast", spec.pan_px >= 20), ("cut", spec.cut_at is not None), ("dark", spec.dark),
                                 ("fade", spec.fade), ("grain", spec.grain > 0), ("hud", spec.hud), ("heavy_compression", spec.crf >= 33))
                 if on]
    return spec


def render(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """The scene's frames, uint8 [T,H,W,3]."""
    h, w, n = spec.height, spec.width, spec.frames
    travel = int(abs(spec.pan_px) * n) + 2
    canvases = [_content(rng, spec.content, h + 64, w + travel)]
    if spec.cut_at is not None:
        canvases.append(_content(rng, str(rng.choice(CONTENT)), h + 64, w + travel))
    glyphs = _glyphs(rng)
    sprites = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-30, 30), rng.uniform(-20, 20), int(rng.integers(12, max(13, h // 8))),
                rng.uniform(0, 255, 3)) for _ in range(int(rng.integers(0, 8)))]
    gain = rng.uniform(0.06, 0.3) if spec.dark else 1.0
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        canvas = canvases[1] if spec.cut_at is not None and i >= spec.cut_at else canvases[0]
        x = int(i * spec.pan_px)
        y = int(32 + 20 * np.sin(i / 9.0)) if spec.pan_px > 20 else 32  # shake with fast pans
        img = canvas[y : y + h, x : x + w].copy()
        for k, (sx, sy, vx, vy, size, colour) in enumerate(sprites):
            px, py = int(sx + vx * i) % w, int(sy + vy * i) % h
            img[py : py + size, px : px + size] = colour
        if spec.hud:
            _draw_hud(img, np.random.default_rng(spec.seed), glyphs)  # the HUD stays put
        img *= gain
        if spec.fade:
            img *= max(0.0, 1.0 - i / max(1, n - 1))
        if spec.grain:
            img += rng.normal(0, spec.grain, img.shape).astype(np.float32)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def brightened(frames: np.ndarray, gain: float) -> np.ndarray:
    """Frames with their brightness times ``gain`` (under 1: darker), clipped to 0..255."""
    return np.clip(frames.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def encode(frames: np.ndarray, path: Path, crf: int = 23, gop: int = 2 * FPS, bframes: int = 0, fps: int = FPS) -> None:
    """H.264 (libx264, yuv420p) with a keyframe exactly every `gop` frames, in Matroska."""
    n, h, w, _ = frames.shape
    with av.open(str(path), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = gop
        vs.codec_context.options = {"preset": "veryfast", "crf": str(crf), "bf": str(bframes),
                                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        vs.codec_context.thread_count = 1
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)


def decode(path: Path, max_width: int = 1280, max_height: int = 720) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """RGB frames [T,H,W,3], their frame numbers by PTS [T] and FFmpeg's corrupt flags.

    Frames larger than the glitch consumer's size are shrunk to fit it, as ingest does.
    """
    frames, numbers, corrupt = [], [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate = float(stream.average_rate or FPS)
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged packet: FFmpeg drops it, decoding goes on (as in ingest)
            for frame in decoded:
                w, h = frame.width, frame.height
                scale = min(1.0, max_width / w, max_height / h)
                tw, th = int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2
                frames.append(frame.reformat(width=tw, height=th, format="rgb24").to_ndarray())
                numbers.append(int(round(float(frame.pts * stream.time_base) * rate)) if frame.pts is not None else len(numbers))
                corrupt.append(bool(frame.is_corrupt))
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.int64), []
    return np.stack(frames), np.asarray(numbers), corrupt


def count_packets(path: Path) -> int:
    """Video packets with data in a file (the frames damage.pick_targets can choose from)."""
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
