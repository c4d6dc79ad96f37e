"""Spectral features of a window of mono audio that need no tagger model.

One short-time Fourier transform (about 25-32 ms Hann frames, 10 ms hop) feeds:

- spectral flux: how fast the log spectrum rises from frame to frame;
- onsets: sharp rises of the short-time energy (5 ms frames every 2.5 ms, at
  least 3 dB above the minimum of the previous 10 ms and the top of +-10 ms),
  per second of non-silent audio, so bursts (gunfire, hits, crackle) give a high
  rate and speech, whose voicing rises gradually, a low one;
- spectral centroid and band energy ratios: where the energy sits;
- spectral flatness: 1 for white noise, near 0 for a few tones;
- harmonicity: the height of the best autocorrelation peak at a pitch lag
  (100-1000 Hz), computed from the power spectrum (Wiener-Khinchin) and
  corrected for the window's own autocorrelation; music and voice score high,
  noise and explosions low.

The analyzer is fed consecutive windows of one stream and carries the frame
overlap across them, so frames and flux run on without a seam.
"""

from __future__ import annotations

import math

import numpy as np

# Band edges in Hz for the energy ratios: low (< 250), mid (250-2000), high (2000-6000), air (> 6000).
BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 250.0),
    "mid": (250.0, 2000.0),
    "high": (2000.0, 6000.0),
    "air": (6000.0, math.inf),
}
PITCH_RANGE_HZ = (100.0, 1000.0)
_LOG_GAIN = 1000.0  # log(1 + gain * magnitude) compression for the flux
_ONSET_FRAME_S = 0.005
_ONSET_HOP_S = 0.0025
_ONSET_RISE_DB = 3.0
_ONSET_BACK = 4  # envelope frames (10 ms) before a peak whose minimum it must rise above
_ONSET_HALF_WIDTH = 4  # envelope frames (10 ms) each side a peak must dominate


def _next_pow2(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, n))))


class SpectralAnalyzer:
    """Per-window spectral features for one stream at `sample_rate` Hz."""

    def __init__(self, sample_rate: int, silence_dbfs: float = -60.0) -> None:
        if sample_rate < 4000:
            raise ValueError(f"sample rate must be at least 4000 Hz, got {sample_rate}")
        self.sample_rate = sample_rate
        self.n_fft = _next_pow2(0.025 * sample_rate)
        self.hop = int(round(0.01 * sample_rate))
        self.silence_power = 10.0 ** (silence_dbfs / 10.0)
        n = np.arange(self.n_fft)
        self._window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.n_fft)).astype(np.float32)
        self._mag_scale = 2.0 / float(self._window.sum())  # a sine of amplitude A peaks at A
        self._freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        self._band_masks = {name: (self._freqs >= lo) & (self._freqs < hi) for name, (lo, hi) in BANDS.items()}
        self._hum_mask = self._freqs < 80.0  # rumble and hum would fake periodicity at short lags
        # Autocorrelation of the window itself: dividing by it undoes the taper's decay with lag.
        win_acf = np.fft.irfft(np.abs(np.fft.rfft(self._window.astype(np.float64))) ** 2)
        lo_lag = max(2, int(sample_rate / PITCH_RANGE_HZ[1]))
        hi_lag = min(int(sample_rate / PITCH_RANGE_HZ[0]), self.n_fft // 3)
        self._lags = np.arange(lo_lag - 1, hi_lag + 2)
        self._onset_frame = max(1, int(round(_ONSET_FRAME_S * sample_rate)))
        self._onset_hop = max(1, int(round(_ONSET_HOP_S * sample_rate)))
        self._win_acf = win_acf[self._lags] / win_acf[0]
        self.reset()

    def reset(self) -> None:
        """Start over as at the beginning of a stream."""
        self._context = np.zeros(self.n_fft - self.hop, dtype=np.float32)
        self._prev_log: np.ndarray | None = None

    def process(self, x: np.ndarray) -> dict[str, float]:
        """Features of the next window `x` (mono float samples) of the stream."""
        x = np.asarray(x, dtype=np.float32)
        joined = np.concatenate([self._context, x])
        self._context = joined[joined.size - (self.n_fft - self.hop) :].copy()
        n_frames = x.size // self.hop
        if n_frames == 0:
            return self._empty()
        frames = np.lib.stride_tricks.sliding_window_view(joined, self.n_fft)[:: self.hop][:n_frames]
        power_frame = np.mean(np.square(frames, dtype=np.float32), axis=1)
        spec = np.fft.rfft(frames * self._window, axis=1)  # float32 in, complex64 out
        power = (spec.real**2 + spec.imag**2) * np.float32(self._mag_scale**2)
        mag = np.sqrt(power)

        log_mag = np.log1p(np.float32(_LOG_GAIN) * mag)
        prev = self._prev_log if self._prev_log is not None else log_mag[:1]
        diff = np.diff(np.concatenate([prev, log_mag]), axis=0)
        flux = np.maximum(diff, 0.0).mean(axis=1)
        self._prev_log = log_mag[-1:].copy()

        active = power_frame > self.silence_power
        by_bin = power[active].sum(axis=0, dtype=np.float64)
        total = float(by_bin.sum())
        # Flatness and harmonicity change slowly: every other frame (20 ms) is enough.
        sampled = power[active][::2]
        features = {
            "spectral_flux_mean": float(flux.mean()),
            "onset_rate_hz": self._onset_rate(joined, x.size),
            "spectral_centroid_hz": float(by_bin @ self._freqs / total) if total > 0 else 0.0,
            "spectral_flatness": self._flatness(sampled),
            "harmonicity": self._harmonicity(sampled),
        }
        for name, mask in self._band_masks.items():
            features[f"band_ratio_{name}"] = float(by_bin[mask].sum() / total) if total > 0 else 0.0
        return features

    def _empty(self) -> dict[str, float]:
        features = dict.fromkeys(
            ["spectral_flux_mean", "onset_rate_hz", "spectral_centroid_hz", "spectral_flatness", "harmonicity"], 0.0
        )
        features.update({f"band_ratio_{name}": 0.0 for name in BANDS})
        return features

    def _onset_rate(self, joined: np.ndarray, new: int) -> float:
        """Sharp energy rises per second of non-silent audio among the last `new` samples of `joined`."""
        fl, hop = self._onset_frame, self._onset_hop
        x = joined.astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(x * x)])
        ends = np.arange(fl, x.size + 1, hop)
        power = (csum[ends] - csum[ends - fl]) / fl
        level = 10.0 * np.log10(power + 1e-12)
        back, w = _ONSET_BACK, _ONSET_HALF_WIDTH
        before = np.pad(level, (back, 0), mode="edge")
        prev_min = np.lib.stride_tricks.sliding_window_view(before, back + 1)[:, :back].min(axis=1)
        around = np.pad(level, (w, w), constant_values=-np.inf)
        local_max = np.lib.stride_tricks.sliding_window_view(around, 2 * w + 1).max(axis=1)
        active = power > self.silence_power
        peaks = (level - prev_min >= _ONSET_RISE_DB) & (level >= local_max) & active
        peaks[1:] &= ~peaks[:-1]  # a flat top would count twice
        mine = ends > x.size - new  # frames ending inside the new window
        active_s = active[mine].sum() * hop / self.sample_rate
        return float(peaks[mine].sum() / active_s) if active_s > 0 else 0.0

    @staticmethod
    def _flatness(power: np.ndarray) -> float:
        if power.shape[0] == 0:
            return 0.0
        p = power.astype(np.float64) + 1e-12
        flat = np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)
        return float(np.clip(flat.mean(), 0.0, 1.0))

    def _harmonicity(self, power: np.ndarray) -> float:
        if power.shape[0] == 0:
            return 0.0
        p = power.astype(np.float64)
        p[:, self._hum_mask] = 0.0
        acf = np.fft.irfft(p, n=self.n_fft, axis=1)
        zero_lag = acf[:, :1]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = acf[:, self._lags] / zero_lag / self._win_acf
        r = np.nan_to_num(r, nan=0.0)
        inner = r[:, 1:-1]
        is_peak = (inner >= r[:, :-2]) & (inner >= r[:, 2:])
        best = np.where(is_peak, inner, 0.0).max(axis=1)
        return float(np.clip(best, 0.0, 1.0).mean())
