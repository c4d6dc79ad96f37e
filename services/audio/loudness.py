"""ITU-R BS.1770-4 / EBU R128 loudness: K-weighting, momentary, short-term, integrated, LRA.

K-weighting is two biquads (a high shelf modelling the head, then a high-pass, the
"RLB" curve). BS.1770 tabulates them for 48 kHz only; here they are designed for
any sample rate from their analogue parameters (centre frequency, Q, gain) with
the bilinear transform, which reproduces the 48 kHz table to about 1e-8.

Units: loudness in LUFS (= LKFS), differences in LU, levels in dBFS where a
full-scale sine has a peak of 0 dBFS and an RMS of -3.01 dBFS.

Blocks follow BS.1770 / EBU Tech 3341: momentary = 400 ms, short-term = 3 s, both
updated every 100 ms; integrated loudness gates 400 ms blocks (75 % overlap) at
-70 LUFS absolute and -10 LU relative. Loudness range follows EBU Tech 3342.
"""

from __future__ import annotations

import math

import numpy as np

from services.audio.iir import BlockIIR

# Analogue parameters of the two K-weighting stages (as tabulated by libebur128's authors,
# derived from the BS.1770 48 kHz coefficients).
_SHELF_F0 = 1681.974450955533
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_HIGHPASS_F0 = 38.13547087602444
_HIGHPASS_Q = 0.5003270373238773

LOUDNESS_OFFSET = -0.691  # BS.1770: makes a 1 kHz sine at -x dBFS (mono) read -x - 3.01 LUFS
ABSOLUTE_GATE_LUFS = -70.0
FLOOR_LUFS = -70.0  # what silence reads instead of minus infinity
FLOOR_DBFS = -120.0

# BS.1770 channel weights by layout, channels in the usual order (FL FR FC LFE BL BR).
CHANNEL_WEIGHTS: dict[str, tuple[float, ...]] = {
    "mono": (1.0,),
    "stereo": (1.0, 1.0),
    "5.0": (1.0, 1.0, 1.0, 1.41, 1.41),
    "5.1": (1.0, 1.0, 1.0, 0.0, 1.41, 1.41),
}


def k_weighting_coefficients(sample_rate: float) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((b, a) of the high shelf, (b, a) of the high-pass) for `sample_rate` Hz."""
    if sample_rate < 4000:
        raise ValueError(f"K-weighting needs a sample rate of at least 4000 Hz, got {sample_rate}")
    k = math.tan(math.pi * _SHELF_F0 / sample_rate)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf_b = np.array([(vh + vb * k / _SHELF_Q + k * k), 2.0 * (k * k - vh), (vh - vb * k / _SHELF_Q + k * k)]) / a0
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _SHELF_Q + k * k) / a0])

    k = math.tan(math.pi * _HIGHPASS_F0 / sample_rate)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _HIGHPASS_Q + k * k) / a0])
    return (shelf_b, shelf_a), (hp_b, hp_a)


class KWeighting:
    """Streaming K-weighting filter (both stages as one 4th-order IIR) for `channels` channels."""

    def __init__(self, sample_rate: float, channels: int = 1) -> None:
        (b1, a1), (b2, a2) = k_weighting_coefficients(sample_rate)
        self._filter = BlockIIR(np.convolve(b1, b2), np.convolve(a1, a2), channels=channels)

    def reset(self) -> None:
        self._filter.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        """K-weighted copy (float64) of `x`, shape (n,) or (n, channels)."""
        return self._filter.process(x)


def energy_to_lufs(energy: np.ndarray | float) -> np.ndarray:
    """Weighted mean square -> LUFS, floored at FLOOR_LUFS (so silence is finite)."""
    e = np.asarray(energy, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lufs = LOUDNESS_OFFSET + 10.0 * np.log10(e)
    return np.maximum(np.nan_to_num(lufs, nan=FLOOR_LUFS, neginf=FLOOR_LUFS), FLOOR_LUFS)


def lufs_to_energy(lufs: np.ndarray | float) -> np.ndarray:
    return 10.0 ** ((np.asarray(lufs, dtype=np.float64) - LOUDNESS_OFFSET) / 10.0)


def amplitude_to_dbfs(value: float) -> float:
    """20*log10(value), floored at FLOOR_DBFS for zero."""
    if not math.isfinite(value) or value <= 0.0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 20.0 * math.log10(value))


def _weights_for(channels: int, weights: tuple[float, ...] | str | None) -> np.ndarray:
    if isinstance(weights, str):
        if weights not in CHANNEL_WEIGHTS:
            raise ValueError(f"unknown channel layout {weights!r}; known: {sorted(CHANNEL_WEIGHTS)}")
        weights = CHANNEL_WEIGHTS[weights]
    if weights is None:
        by_count = {len(w): w for w in CHANNEL_WEIGHTS.values()}
        if channels == 6:
            weights = CHANNEL_WEIGHTS["5.1"]
        elif channels in by_count:
            weights = by_count[channels]
        else:
            weights = (1.0,) * channels
    w = np.asarray(weights, dtype=np.float64)
    if w.size != channels:
        raise ValueError(f"{w.size} channel weights given for {channels} channels")
    return w


def subblock_energies(samples: np.ndarray, sample_rate: float, weights: tuple[float, ...] | str | None = None) -> np.ndarray:
    """Channel-weighted K-weighted mean square of consecutive 100 ms sub-blocks (a partial tail is dropped).

    Momentary loudness is the mean of 4 consecutive sub-blocks, short-term of 30.
    """
    x = _as_2d(samples)
    w = _weights_for(x.shape[1], weights)
    weighted = KWeighting(sample_rate, x.shape[1]).process(x)
    hop = int(round(sample_rate * 0.1))
    n = weighted.shape[0] // hop
    sq = (weighted[: n * hop] ** 2).reshape(n, hop, -1).mean(axis=1)
    return sq @ w


def sliding_loudness(sub_energies: np.ndarray, blocks: int) -> np.ndarray:
    """LUFS of every full run of `blocks` consecutive sub-blocks (4: momentary, 30: short-term)."""
    e = np.asarray(sub_energies, dtype=np.float64)
    if e.size < blocks:
        return np.empty(0)
    csum = np.concatenate([[0.0], np.cumsum(e)])
    return energy_to_lufs((csum[blocks:] - csum[:-blocks]) / blocks)


def momentary_loudness(samples: np.ndarray, sample_rate: float, weights: tuple[float, ...] | str | None = None) -> np.ndarray:
    """Momentary loudness (400 ms) every 100 ms, in LUFS."""
    return sliding_loudness(subblock_energies(samples, sample_rate, weights), 4)


def short_term_loudness(samples: np.ndarray, sample_rate: float, weights: tuple[float, ...] | str | None = None) -> np.ndarray:
    """Short-term loudness (3 s) every 100 ms, in LUFS."""
    return sliding_loudness(subblock_energies(samples, sample_rate, weights), 30)


def gated_loudness(block_energies: np.ndarray) -> float:
    """BS.1770-4 integrated loudness of 400 ms block energies: -70 LUFS absolute, -10 LU relative gate."""
    e = np.asarray(block_energies, dtype=np.float64)
    e = e[energy_to_lufs(e) > ABSOLUTE_GATE_LUFS]
    if e.size == 0:
        return FLOOR_LUFS
    relative_gate = float(energy_to_lufs(e.mean())) - 10.0
    e = e[energy_to_lufs(e) > relative_gate]
    return float(energy_to_lufs(e.mean())) if e.size else FLOOR_LUFS


def integrated_loudness(samples: np.ndarray, sample_rate: float, weights: tuple[float, ...] | str | None = None) -> float:
    """Integrated (gated) programme loudness in LUFS; `samples` is (n,) or (n, channels)."""
    sub = subblock_energies(samples, sample_rate, weights)
    if sub.size < 4:
        return FLOOR_LUFS
    csum = np.concatenate([[0.0], np.cumsum(sub)])
    return gated_loudness((csum[4:] - csum[:-4]) / 4)


def loudness_range(samples: np.ndarray, sample_rate: float, weights: tuple[float, ...] | str | None = None) -> float:
    """EBU Tech 3342 loudness range (LRA) in LU: 10th to 95th percentile of gated short-term loudness."""
    st = short_term_loudness(samples, sample_rate, weights)
    st = st[st > ABSOLUTE_GATE_LUFS]
    if st.size == 0:
        return 0.0
    relative_gate = float(energy_to_lufs(lufs_to_energy(st).mean())) - 20.0
    st = st[st > relative_gate]
    if st.size == 0:
        return 0.0
    low, high = np.percentile(st, [10.0, 95.0])
    return float(high - low)


def _as_2d(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"audio must be floating point in [-1, 1], got dtype {x.dtype}")
    return x
