"""A decoder's grey fill is mid-grey; a game's fogged dark floor across the whole picture, as
flat over a row as a fill, is not fill (it raised grey incidents on real OpenArena footage)."""

from __future__ import annotations

import av
import numpy as np

from services.glitch.bands import FLAT_STD, find_bands
from training.glitch import corrupt, scenes


def _floor(frame: np.ndarray, top: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth dark-grey floor across the full width (RGB about 52, 52, 45), as the fogged floor
    of OpenArena's oacmpdm1: a gentle left-to-right shading and fine rendering noise."""
    out = frame.copy()
    shade = 52 + 5 * np.sin(np.linspace(0, np.pi, frame.shape[1]))[None, :, None]
    floor = shade + rng.normal(0, 0.8, (rows, frame.shape[1], 1)) + np.array([0, -0.5, -7])
    out[top : top + rows] = np.clip(floor, 0, 255).astype(np.uint8)
    return out


def test_a_dark_fogged_floor_is_not_fill_and_the_same_rows_filled_are(shared_data, tmp_path) -> None:
    with av.open(str(shared_data / "media" / "openarena_dm2.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(12))]
    rng = np.random.default_rng(3)
    floors = np.stack([_floor(f, 420, 80, rng) for f in frames[:6]])
    fills = floors.copy()
    for i in range(6):  # the same place, a macroblock-aligned fill, the decoder's way
        fills[i, 416:496] = corrupt.fill(frames[6 + i], np.random.default_rng(i), "grey", whole=True)[0][416:496]
    path = tmp_path / "floors.mkv"
    scenes.encode(np.concatenate([floors, fills]), path, crf=23, gop=12, fps=10)
    decoded, _, _ = scenes.decode(path)
    rows = decoded[:6, 424:496:2, ::2].astype(np.float32)
    assert rows.std(axis=2).max() < FLAT_STD and 45 < rows.mean() < 60, "the floor is as flat and dark as the case it stands for"
    assert [b for f in decoded[:6] for b in find_bands(f)] == []
    found = [[(b.kind, b.top, b.bottom) for b in find_bands(f)] for f in decoded[6:]]
    assert all(any(kind == "grey" and abs(top - 416) <= 4 and abs(bottom - 496) <= 4 for kind, top, bottom in bands) for bands in found), found
