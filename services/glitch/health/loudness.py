"""Loudness after ITU-R BS.1770 (EBU R128) on ingest's mono audio, numpy only.

The K-weighting (a high shelf and a high-pass biquad, BS.1770's coefficients re-derived for
the stream's sample rate) is applied as a power response to each 100 ms block's spectrum:
loudness is a mean square, so weighting the block's power spectrum gives the filtered mean
square without running an IIR filter sample by sample in Python. Momentary loudness is the
last 400 ms, short-term the last 3 s (BS.1770: -0.691 + 10 log10 of the weighted mean square).

Ingest sends a mono downmix, so a stereo mix whose channels are alike reads up to 3 LU below
what a meter on the stereo source shows; the loudness thresholds leave room for that.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

BLOCK_S = 0.1
MOMENTARY_BLOCKS = 4
SHORT_TERM_BLOCKS = 30
FLOOR = 1e-12  # mean square of digital silence, so that log10 stays finite (-120 dB)


def _biquad_power(b: tuple[float, float, float], a: tuple[float, float, float], freqs: np.ndarray, rate: int) -> np.ndarray:
    z = np.exp(-1j * 2 * np.pi * freqs / rate)
    h = (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    return np.abs(h) ** 2


def k_weighting_power(n: int, rate: int) -> np.ndarray:
    """|H(f)|^2 of BS.1770's K-weighting at the rfft frequencies of an n-sample block."""
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    k = math.tan(math.pi * 1681.974450955533 / rate)  # stage 1: high shelf, +4 dB
    q, vh = 0.7071752369554196, 10 ** (3.999843853973347 / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = _biquad_power(((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0),
                          (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0), freqs, rate)
    k = math.tan(math.pi * 38.13547087602444 / rate)  # stage 2: high-pass, RLB
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    highpass = _biquad_power((1.0, -2.0, 1.0), (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0), freqs, rate)
    return shelf * highpass


def lufs(mean_square: float) -> float:
    return -0.691 + 10 * math.log10(max(mean_square, FLOOR))


def dbfs(mean_square: float) -> float:
    """RMS level in dB relative to a full-scale square wave (a full-scale sine reads -3 dBFS)."""
    return 10 * math.log10(max(mean_square, FLOOR))


@dataclass(frozen=True)
class Block:
    """One 100 ms block: its start, its unweighted level and the loudness ending with it."""

    start_s: float
    rms_dbfs: float
    momentary_lufs: float
    short_term_lufs: float
    short_term_full: bool  # a whole 3 s lay behind the short-term figure


class LoudnessMeter:
    """Cuts a stream's samples into 100 ms blocks and measures each; keeps only 3 s."""

    def __init__(self) -> None:
        self._rate = 0
        self._weights: np.ndarray | None = None
        self._carry = np.zeros(0, np.float32)
        self._carry_start = 0.0
        self._ms: deque[float] = deque(maxlen=SHORT_TERM_BLOCKS)  # weighted mean squares

    def reset(self) -> None:
        """Forget the partial block and the history (after a gap or a rate change)."""
        self._carry = np.zeros(0, np.float32)
        self._ms.clear()

    def add(self, start_s: float, rate: int, samples: np.ndarray) -> list[Block]:
        if rate != self._rate:
            self.reset()
            self._rate = rate
            self._weights = k_weighting_power(int(round(rate * BLOCK_S)), rate)
        n = int(round(rate * BLOCK_S))
        if not len(self._carry):
            self._carry_start = start_s
        data = np.concatenate([self._carry, samples.astype(np.float32, copy=False)])
        whole = len(data) // n
        out: list[Block] = []
        if whole:
            blocks = data[: whole * n].reshape(whole, n).astype(np.float64)
            raw = np.mean(blocks * blocks, axis=1)
            spectrum = np.abs(np.fft.rfft(blocks, axis=1)) ** 2
            spectrum[:, 1:-1] *= 2  # rfft's one-sided bins (Parseval); n is even at every usual rate
            weighted = spectrum @ self._weights / (n * n)
            for i in range(whole):
                self._ms.append(float(weighted[i]))
                recent = list(self._ms)
                out.append(Block(
                    self._carry_start + i * BLOCK_S, dbfs(float(raw[i])),
                    lufs(float(np.mean(recent[-MOMENTARY_BLOCKS:]))), lufs(float(np.mean(recent))),
                    len(recent) == SHORT_TERM_BLOCKS,
                ))
        self._carry = data[whole * n:]
        self._carry_start += whole * BLOCK_S
        return out
