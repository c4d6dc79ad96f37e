"""Per-stream audio analysis: chunks of mono audio in, one feature record per 10 s window out.

This is the entry point the service calls. Feed it the chunks the ingest service
delivers for one stream (mono float samples, each tagged with its media start
time) with `push`; it returns the records of the windows that those samples
complete. At the end of the stream `flush` returns the last, partial window.

Window `i` covers media time [10 i, 10 i + 10). Filter state, 100 ms loudness
sub-blocks and the STFT overlap carry from one window to the next, so momentary
and short-term loudness run on across the boundary as in a real meter.

Timing rules: a chunk that starts before the expected next sample overlaps what
was already seen (a redelivery) and its old part is dropped; one that starts
later leaves a gap that is filled with silence and counted out of
`audio_coverage`. A gap of a whole window or more restarts the meters; windows
with no audio at all produce no record. Samples must be finite floats (NaN or
infinity is an error, not silently repaired).

Every record has the keys of `FEATURES` (plus `tag_*` keys when a tagger is
configured) and `metadata["tagger"]`: the tagger's name or "none".
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import structlog

from services.audio.loudness import (
    FLOOR_DBFS,
    KWeighting,
    amplitude_to_dbfs,
    energy_to_lufs,
    gated_loudness,
)
from services.audio.spectral import BANDS, SpectralAnalyzer
from services.audio.tagger import OnnxTagger

log = structlog.get_logger(__name__)

# Feature name -> unit and meaning. Loudness values are floored at -70 LUFS and levels at -120 dBFS.
FEATURES: dict[str, str] = {
    "audio_coverage": "fraction 0-1 of the window for which audio arrived",
    "peak_dbfs": "dBFS, highest absolute sample",
    "rms_dbfs": "dBFS, root mean square (a sine of peak 0.1 reads -23.0)",
    "clipping_fraction": "fraction 0-1 of samples at or above 0.999 full scale",
    "silence_fraction": "fraction 0-1 of 100 ms blocks quieter than the silence level (-60 dBFS RMS)",
    "loudness_momentary_max_lufs": "LUFS, highest momentary (400 ms) loudness, BS.1770-4",
    "loudness_momentary_mean_lufs": "LUFS, mean of the momentary loudness values (every 100 ms)",
    "loudness_shortterm_max_lufs": "LUFS, highest short-term (3 s) loudness",
    "loudness_shortterm_mean_lufs": "LUFS, mean of the short-term loudness values (every 100 ms)",
    "loudness_integrated_lufs": "LUFS, gated (-70 LUFS / -10 LU) loudness of the window",
    "loudness_jump_lu": "LU, momentary max minus the mean momentary loudness of the preceding windows (0 with none)",
    "spectral_flux_mean": "mean positive change of the log-magnitude spectrum per 10 ms frame",
    "onset_rate_hz": "sharp energy rises (>= 3 dB in 10 ms) per second of non-silent audio",
    "spectral_centroid_hz": "Hz, power-weighted mean frequency of the non-silent frames",
    "spectral_flatness": "0-1, geometric over arithmetic mean of the power spectrum (1 = white noise)",
    "harmonicity": "0-1, mean best normalised autocorrelation peak at a 100-1000 Hz pitch lag",
    **{f"band_ratio_{name}": f"fraction 0-1 of the power in {lo:g}-{hi:g} Hz" for name, (lo, hi) in BANDS.items()},
}
# Per-second values beside the window's features (second k of the window; a partial window has
# fewer): fusion finds a moment's peak and boundaries at 1 s from them. Not in FEATURES (the
# window's own keys); named by `second_features`.
SECOND_FEATURES: dict[str, str] = {
    "loudness_s": "LUFS, highest momentary (400 ms) loudness in second k of the window",
    "onset_s": "LU, largest rise of the 100 ms block loudness over the block before it in second k (0 when none rises)",
}
TAG_FEATURES = "tag_<class>_mean / tag_<class>_max: tagger score 0-1, mean and max over the window's segments"


def second_features(seconds: int) -> set[str]:
    """The per-second keys a record of a window with `seconds` seconds of audio carries."""
    return {f"{prefix}{k}" for prefix in SECOND_FEATURES for k in range(seconds)}


@dataclass(frozen=True)
class WindowFeatures:
    """One window's record: index, media time span, features and metadata (tagger name)."""

    window: int
    start_s: float
    end_s: float
    features: dict[str, float]
    metadata: dict[str, str] = field(default_factory=dict)


class AudioAnalyzer:
    """Feature extraction for one stream. Not thread-safe; use one per stream."""

    def __init__(
        self,
        sample_rate: int = 32000,
        window_s: float = 10.0,
        tagger: OnnxTagger | None = None,
        silence_dbfs: float = -60.0,
        history_windows: int = 3,
        gap_tolerance_s: float = 0.002,
    ) -> None:
        if not isinstance(sample_rate, int) or sample_rate < 4000:
            raise ValueError(f"sample_rate must be an integer of at least 4000 Hz, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self.window_len = int(round(window_s * sample_rate))
        self.window_s = window_s
        self.tagger = tagger
        self.tagger_name = tagger.name if tagger is not None else "none"
        self._sub_len = int(round(0.1 * sample_rate))
        self._silence_power = 10.0 ** (silence_dbfs / 10.0)
        self._tolerance = int(round(gap_tolerance_s * sample_rate))
        self._kweight = KWeighting(sample_rate)
        self._spectral = SpectralAnalyzer(sample_rate, silence_dbfs)
        self._sub_history: deque[float] = deque(maxlen=29)  # sub-blocks before the window, for short-term
        self._momentary_means: deque[float] = deque(maxlen=history_windows)
        self._buf = np.zeros(self.window_len, dtype=np.float32)
        self._window: int | None = None
        self._next = 0  # absolute sample index expected next
        self._present = 0  # real samples in the current window

    # ---- input -------------------------------------------------------------------------

    def push(self, samples: np.ndarray, start_s: float) -> list[WindowFeatures]:
        """Add a chunk that starts at media time `start_s`; return the windows it completes."""
        x = self._validate(samples, start_s)
        pos = int(round(start_s * self.sample_rate))
        done: list[WindowFeatures] = []
        if self._window is None:
            self._open(pos // self.window_len)
        if pos < self._next:  # overlap with what we already have: a redelivery
            x = x[self._next - pos :]
            pos = self._next
        elif pos - self._next <= self._tolerance:
            pos = self._next  # timestamp rounding, not a gap
        while x.size:
            win_start = self._window * self.window_len
            win_end = win_start + self.window_len
            if pos >= win_end:
                done.extend(self._close(self._next - win_start))
                target = pos // self.window_len
                if target > self._window + 1:
                    self._restart_meters()
                self._open(target)
                continue
            n = min(x.size, win_end - pos)
            self._buf[pos - win_start : pos - win_start + n] = x[:n]
            self._present += n
            self._next = pos + n
            pos += n
            x = x[n:]
            if pos == win_end:
                done.extend(self._close(self.window_len))
                self._open(self._window + 1)
        return done

    def close_through(self, window: int) -> list[WindowFeatures]:
        """The media clock says windows <= `window` are over: close them with what arrived.

        Samples that arrive later for a closed window are dropped as old (the window's
        record reports the coverage it had). Skipping whole windows restarts the meters,
        as a gap in `push` does.
        """
        if self._window is None or self._window > window:
            return []
        done = self._close(self._next - self._window * self.window_len)
        if window > self._window:
            self._restart_meters()
        self._open(window + 1)
        return done

    def flush(self) -> list[WindowFeatures]:
        """End of stream: the record of the last, partial window (if it has audio)."""
        if self._window is None:
            return []
        done = self._close(self._next - self._window * self.window_len)
        self._window = None
        return done

    def _validate(self, samples: np.ndarray, start_s: float) -> np.ndarray:
        x = np.asarray(samples)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise ValueError(f"audio chunk must be mono (n,) samples, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"audio chunk must be float samples in [-1, 1], got dtype {x.dtype}")
        if not (isinstance(start_s, (int, float)) and math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"chunk start time must be a finite media time >= 0 s, got {start_s!r}")
        if not np.all(np.isfinite(x)):
            raise ValueError("audio chunk contains NaN or infinite samples")
        return x.astype(np.float32, copy=False)

    # ---- windows -----------------------------------------------------------------------

    def _open(self, window: int) -> None:
        self._window = window
        if self._next < window * self.window_len:
            self._next = window * self.window_len
        self._buf[:] = 0.0
        self._present = 0

    def _restart_meters(self) -> None:
        self._kweight.reset()
        self._spectral.reset()
        self._sub_history.clear()

    def _close(self, length: int) -> list[WindowFeatures]:
        if self._present == 0 or length <= 0:
            return []
        audio = self._buf[:length]
        start = self._window * self.window_s
        features = {"audio_coverage": self._present / self.window_len}
        features.update(self._levels(audio))
        features.update(self._loudness(audio))
        features.update(self._spectral.process(audio))
        metadata = {"tagger": self.tagger_name}
        if self.tagger is not None:
            try:
                features.update(self.tagger.tag(audio, self.sample_rate))
            except Exception as exc:  # a failing model must not lose the window's other features
                log.error("tagger_failed", window=self._window, error=str(exc))
                metadata["tagger_error"] = str(exc)
        record = WindowFeatures(self._window, start, start + length / self.sample_rate, features, metadata)
        return [record]

    def _levels(self, audio: np.ndarray) -> dict[str, float]:
        a = audio.astype(np.float64)
        peak = float(np.max(np.abs(a)))
        rms = math.sqrt(float(np.mean(a * a)))
        n_sub = max(1, a.size // self._sub_len)
        sub_power = np.square(a[: n_sub * self._sub_len]).reshape(n_sub, -1).mean(axis=1) if a.size >= self._sub_len else np.array([rms * rms])
        return {
            "peak_dbfs": amplitude_to_dbfs(peak),
            "rms_dbfs": amplitude_to_dbfs(rms) if rms > 0 else FLOOR_DBFS,
            "clipping_fraction": float(np.mean(np.abs(a) >= 0.999)),
            "silence_fraction": float(np.mean(sub_power < self._silence_power)),
        }

    def _loudness(self, audio: np.ndarray) -> dict[str, float]:
        weighted = self._kweight.process(audio)
        n_sub = weighted.size // self._sub_len
        sub = np.square(weighted[: n_sub * self._sub_len]).reshape(n_sub, self._sub_len).mean(axis=1) if n_sub else np.zeros(0)
        history = np.array(self._sub_history, dtype=np.float64)
        joined = np.concatenate([history, sub])
        csum = np.concatenate([[0.0], np.cumsum(joined)])
        ends = np.arange(history.size + 1, joined.size + 1)  # one value per sub-block of this window

        def sliding(blocks: int) -> np.ndarray:
            starts = np.maximum(0, ends - blocks)  # fewer blocks at the very start of a stream
            return (csum[ends] - csum[starts]) / (ends - starts)

        if n_sub == 0:
            momentary_e = short_e = np.array([np.mean(np.square(weighted))]) if weighted.size else np.zeros(1)
        else:
            momentary_e, short_e = sliding(4), sliding(30)
        previous = history[-1] if history.size else None
        self._sub_history.extend(sub.tolist())
        momentary = energy_to_lufs(momentary_e)
        short = energy_to_lufs(short_e)
        m_mean = float(momentary.mean())
        jump = float(momentary.max()) - float(np.mean(self._momentary_means)) if self._momentary_means else 0.0
        self._momentary_means.append(m_mean)
        return {
            "loudness_momentary_max_lufs": float(momentary.max()),
            "loudness_momentary_mean_lufs": m_mean,
            "loudness_shortterm_max_lufs": float(short.max()),
            "loudness_shortterm_mean_lufs": float(short.mean()),
            "loudness_integrated_lufs": gated_loudness(momentary_e),
            "loudness_jump_lu": jump,
            **self._per_second(sub, momentary if n_sub else np.zeros(0), previous),
        }

    def _per_second(self, sub: np.ndarray, momentary: np.ndarray, previous: float | None) -> dict[str, float]:
        """loudness_s<k> and onset_s<k> from the window's 100 ms blocks (see SECOND_FEATURES)."""
        if sub.size == 0:
            return {}
        per = int(round(1.0 / 0.1))  # 100 ms blocks per second
        level = energy_to_lufs(sub)
        before = energy_to_lufs(np.array([previous]))[0] if previous is not None else level[0]
        rise = np.maximum(0.0, np.diff(np.concatenate([[before], level])))
        out: dict[str, float] = {}
        for k in range(math.ceil(sub.size / per)):
            part = slice(k * per, (k + 1) * per)
            out[f"loudness_s{k}"] = float(momentary[part].max())
            out[f"onset_s{k}"] = float(rise[part].max())
        return out
