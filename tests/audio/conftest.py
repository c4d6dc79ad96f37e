"""Audio test helpers: decode and encode real files with PyAV, the way the ingest service does."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest

os.environ.setdefault("STREAMSIGHT_ONNX_PROVIDER", "cpu")  # keep test runs on the shared CPU

# training/ is not an installed package; the conversion tests import its model code.
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def decode(path: Path, rate: int | None = None, layout: str | None = "mono") -> tuple[np.ndarray, int]:
    """Decode a file's first audio stream to float32 (n,) for mono or (n, channels); return (samples, rate).

    `rate=None` keeps the file's rate; `layout=None` keeps its channels.
    """
    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        out_rate = rate or stream.rate
        out_layout = layout or stream.layout.name
        resampler = av.AudioResampler(format="flt", layout=out_layout, rate=out_rate)
        for frame in container.decode(stream):
            chunks.extend(resampler.resample(frame))
        chunks.extend(resampler.resample(None))
    channels = len(av.AudioLayout(out_layout).channels)
    data = np.concatenate([c.to_ndarray().reshape(-1, channels) for c in chunks]).astype(np.float32)
    return (data[:, 0] if channels == 1 else data), out_rate


def encode_wav(path: Path, samples: np.ndarray, rate: int, layout: str) -> Path:
    """Write float samples (n, channels) as a 32-bit float WAV with the given channel layout."""
    x = np.ascontiguousarray(np.atleast_2d(samples.T).T.astype(np.float32))
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout=layout)
        for start in range(0, x.shape[0], 4096):
            block = x[start : start + 4096]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def sine(level_dbfs: float, seconds: float, rate: int, freq: float = 1000.0) -> np.ndarray:
    """A sine whose peak is `level_dbfs` (float64)."""
    t = np.arange(int(round(seconds * rate))) / rate
    return 10.0 ** (level_dbfs / 20.0) * np.sin(2.0 * np.pi * freq * t)


@pytest.fixture(scope="session")
def sounds(shared_data: Path) -> Callable[[str], np.ndarray]:
    """Decode a file from shared/data/sounds to mono 32 kHz, as ingest delivers it."""
    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in cache:
            cache[name], _ = decode(shared_data / "sounds" / name, rate=32000, layout="mono")
        return cache[name]

    return load


@pytest.fixture(scope="session")
def audio_io():
    """decode / encode_wav / sine for tests (conftest helpers cannot be imported under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(decode=decode, encode_wav=encode_wav, sine=sine)
