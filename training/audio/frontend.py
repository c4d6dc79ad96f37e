"""The PANNs log-mel front end as torch modules, with the official checkpoints' parameter names.

PANNs (Kong et al., 2020) compute a power spectrogram with a Hann-windowed STFT
written as two 1-D convolutions (real and imaginary DFT kernels; centre padding
by reflection), project it on a Slaney-style mel filterbank (librosa's default:
Slaney mel scale, area-normalised triangles) and take 10*log10 with a 1e-10 floor.
The checkpoints store the DFT kernels and the mel matrix themselves
(`spectrogram_extractor.stft.conv_real.weight`, `...conv_imag.weight`,
`logmel_extractor.melW`), so a converted model preprocesses exactly as trained.
The matrices built here only matter for checkpoints made from scratch (tests).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: f / (200/3) below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3.0)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, linear)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3.0)
    log_part = 1000.0 * np.exp((m - 15.0) * (math.log(6.4) / 27.0))
    return np.where(m >= 15.0, log_part, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) matrix of area-normalised triangular mel filters."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_freqs[None, :] - lower) / (centre - lower)
    falling = (upper - fft_freqs[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (upper - lower))  # equal area per filter
    return weights.T.astype(np.float32)


class STFT(nn.Module):
    """|STFT| parts by convolution: `conv_real`, `conv_imag` hold window * cos / -sin kernels."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # periodic Hann
        angle = 2.0 * np.pi * np.outer(np.arange(bins), n) / n_fft
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy((np.cos(angle) * window)[:, None, :]))
            self.conv_imag.weight.copy_(torch.from_numpy((-np.sin(angle) * window)[:, None, :]))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.pad(waveform[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        return self.conv_real(x), self.conv_imag(x)  # (batch, bins, frames) each


class Spectrogram(nn.Module):
    """Power spectrogram (batch, 1, frames, bins)."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = STFT(n_fft, hop)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(waveform)
        return (real**2 + imag**2).transpose(1, 2)[:, None, :, :]


class LogmelFilterBank(nn.Module):
    """10*log10(max(power @ melW, 1e-10)): (batch, 1, frames, mels)."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
        super().__init__()
        self.melW = nn.Parameter(torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))
