"""Fixtures for the vision tests: real frames decoded with PyAV, the shipped models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("STREAMSIGHT_ONNX_PROVIDER", "cpu")  # keep test runs on the shared 2-core CPU

# training/ is not an installed package; the ONNX-vs-torch tests import its model code
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def decode(path: Path, width: int | None = 320, size: tuple[int, int] | None = None, fmt: str = "gray") -> tuple[np.ndarray, np.ndarray]:
    """Frames of a media file as uint8 arrays, scaled to `width` (aspect kept) or to `size` (w, h)."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if size is None:
                w, h = width, int(round(frame.height * width / frame.width / 2) * 2)
            else:
                w, h = size
            frames.append(frame.reformat(width=w, height=h, format=fmt).to_ndarray())
            times.append(float(frame.pts * stream.time_base))
    return np.stack(frames), np.asarray(times)


@pytest.fixture(scope="session")
def vtest_gray(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    return decode(shared_data / "media" / "vtest.avi")


@pytest.fixture(scope="session")
def bbb_gray(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    return decode(shared_data / "media" / "bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def models():
    from services.vision.runtime import VisionModels

    return VisionModels(intra_threads=2)


@pytest.fixture(scope="session")
def decode_media():
    """The `decode` helper, for tests that need other sizes or RGB."""
    return decode
