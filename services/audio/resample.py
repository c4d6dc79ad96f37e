"""Band-limited resampling of one window of mono audio, in numpy.

The tagger sees whole windows (10 s), so resampling by FFT (cut or zero-pad the
spectrum) is exact band-limiting and cheap. The signal is mirrored at both ends
before the transform so the FFT's wrap-around does not ring at the edges.
"""

from __future__ import annotations

import numpy as np


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """`x` (mono) from `rate_in` Hz to `rate_out` Hz, float32."""
    x = np.asarray(x, dtype=np.float32)
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    n_out = int(round(x.size * rate_out / rate_in))
    pad = min(x.size - 1, int(0.05 * rate_in))  # 50 ms of mirror each side
    padded = np.concatenate([x[1 : pad + 1][::-1], x, x[-pad - 1 : -1][::-1]]) if pad > 0 else x
    n_in = padded.size
    n_padded_out = int(round(n_in * rate_out / rate_in))
    spec = np.fft.rfft(padded.astype(np.float64))
    keep = min(spec.size, n_padded_out // 2 + 1)
    out_spec = np.zeros(n_padded_out // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    y = np.fft.irfft(out_spec, n_padded_out) * (n_padded_out / n_in)
    start = int(round(pad * rate_out / rate_in))
    return y[start : start + n_out].astype(np.float32)
