"""Generated frame pairs with known motion: calm (still, slow drift, a few slow objects)
and action (fast pans, shake, zoom, many fast objects), for the motion CNN.

A scene is a textured canvas (a real frame or a procedural texture) seen by a virtual
camera; the second frame moves the camera (translation, rotation, zoom) and moves
sprites (patches cut from another texture). Everything is drawn with torch's
grid_sample at 320x180, the service's flow size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

HEIGHT, WIDTH = 180, 320


def procedural_texture(rng: np.random.Generator, h: int = 2 * HEIGHT, w: int = 2 * WIDTH) -> torch.Tensor:
    """Sum of blurred noise at several scales plus random rectangles, 0..255, [1,1,h,w]."""
    tex = torch.zeros(1, 1, h, w)
    for scale in (2, 8, 32):
        noise = torch.from_numpy(rng.standard_normal((1, 1, h // scale + 2, w // scale + 2)).astype(np.float32))
        tex += F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False) * scale
    for _ in range(rng.integers(5, 20)):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        tex[..., y : y + rng.integers(5, 60), x : x + rng.integers(5, 60)] += float(rng.uniform(-60, 60))
    tex = (tex - tex.mean()) / (tex.std() + 1e-6) * float(rng.uniform(25, 55)) + float(rng.uniform(70, 180))
    return tex.clamp(0, 255)


def _view(canvas: torch.Tensor, dx: float, dy: float, angle_deg: float, zoom: float) -> torch.Tensor:
    """Camera view [1,1,HEIGHT,WIDTH] of the canvas centre, moved by (dx,dy) px, rotated, zoomed."""
    _, _, ch, cw = canvas.shape
    ys, xs = torch.meshgrid(torch.arange(HEIGHT, dtype=torch.float32), torch.arange(WIDTH, dtype=torch.float32), indexing="ij")
    x0, y0 = xs - (WIDTH - 1) / 2, ys - (HEIGHT - 1) / 2
    a = math.radians(angle_deg)
    # a point fixed in the world appears at camera-frame x' = R*zoom*x - d, so the view samples the inverse
    cx = (math.cos(a) * x0 + math.sin(a) * y0) / zoom + dx + (cw - 1) / 2
    cy = (-math.sin(a) * x0 + math.cos(a) * y0) / zoom + dy + (ch - 1) / 2
    grid = torch.stack((cx / (cw - 1) * 2 - 1, cy / (ch - 1) * 2 - 1), dim=-1)[None]
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def make_pair(canvas: torch.Tensor, sprite_source: torch.Tensor, action: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One frame pair (uint8 [180,320] each) with calm or action motion."""
    if action:
        modes = rng.choice(["pan", "shake", "zoom", "local"], size=int(rng.integers(1, 3)), replace=False)
    else:
        modes = np.array(["still"])
    speed = rng.uniform(4, 22)
    dirn = rng.uniform(0, 2 * math.pi)
    dx, dy, angle, zoom = 0.0, 0.0, 0.0, 1.0
    if "pan" in modes or "shake" in modes:
        dx, dy = speed * math.cos(dirn), speed * math.sin(dirn)
    if "shake" in modes:
        angle = float(rng.uniform(1.5, 5.0) * rng.choice([-1, 1]))
    if "zoom" in modes:
        zoom = float(rng.choice([rng.uniform(1.05, 1.15), rng.uniform(0.87, 0.95)]))
    if "still" in modes:
        drift = rng.uniform(0, 1.0)
        dx, dy = drift * math.cos(dirn), drift * math.sin(dirn)
        angle = float(rng.uniform(-0.15, 0.15))
        zoom = float(rng.uniform(0.997, 1.003))
    f1 = _view(canvas, 0.0, 0.0, 0.0, 1.0)
    f2 = _view(canvas, dx, dy, angle, zoom)

    local = "local" in modes
    n_sprites = int(rng.integers(4, 12)) if local else int(rng.integers(0, 4))
    _, _, sh, sw = sprite_source.shape
    for _ in range(n_sprites):
        size = int(rng.integers(24, 90)) if local else int(rng.integers(8, 32))
        vmax = rng.uniform(5, 22) if local else rng.uniform(0, 1.5)
        a = rng.uniform(0, 2 * math.pi)
        vx, vy = int(round(vmax * math.cos(a))), int(round(vmax * math.sin(a)))
        sy, sx = int(rng.integers(0, sh - size)), int(rng.integers(0, sw - size))
        patch = sprite_source[..., sy : sy + size, sx : sx + size]
        y1 = int(rng.integers(0, HEIGHT - size))
        x1 = int(rng.integers(0, WIDTH - size))
        f1[..., y1 : y1 + size, x1 : x1 + size] = patch
        y2 = min(max(y1 + vy, 0), HEIGHT - size)
        x2 = min(max(x1 + vx, 0), WIDTH - size)
        f2[..., y2 : y2 + size, x2 : x2 + size] = patch

    gain = float(rng.uniform(-3, 3))
    out = []
    for f, g in ((f1, 0.0), (f2, gain)):
        f = f + g + torch.from_numpy(rng.normal(0, 2.0, size=f.shape).astype(np.float32))
        out.append(f.clamp(0, 255).round().to(torch.uint8)[0, 0].numpy())
    return out[0], out[1]


def upscale_texture(gray: np.ndarray) -> torch.Tensor:
    """A real gray frame (any size) -> canvas [1,1,360,640] float 0..255."""
    t = torch.from_numpy(gray.astype(np.float32))[None, None]
    return F.interpolate(t, size=(2 * HEIGHT, 2 * WIDTH), mode="bilinear", align_corners=False)


def generate(textures: list[np.ndarray], n: int, seed: int, procedural_share: float = 0.4) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """n pairs, half action, textures drawn from the given real frames or procedural ones."""
    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for i in range(n):
        def texture() -> torch.Tensor:
            if not textures or rng.uniform() < procedural_share:
                return procedural_texture(rng)
            return upscale_texture(textures[int(rng.integers(0, len(textures)))])
        action = i % 2 == 1
        pairs.append(make_pair(texture(), texture(), action, rng))
        labels.append(int(action))
    return pairs, np.asarray(labels)
