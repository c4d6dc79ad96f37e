"""Per-window vision features from flow fields, motion-CNN scores, embeddings and gray frames.

Plain numpy; names and units are documented in FEATURES.md beside this file. Flow magnitudes
are normalised to a 320-pixel-wide frame and to the nominal flow frame interval (1/flow_fps),
so streams of other sizes, or pairs a dropped frame apart, are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REFERENCE_WIDTH = 320
MOVING_THRESHOLD = 1.0  # px per frame interval at 320 px: below this a pixel counts as still
MIN_MOVING_SHARE = 0.005  # direction coherence needs at least this share of moving pixels
BORDER = 4  # pixels ignored at each edge: flow there is extrapolated, not measured
SAMPLE_STEP = 4  # every 4th pixel per axis is kept for the window's percentile
HIST_BINS = 32
CUT_THRESHOLD = 0.3  # L1 distance of normalised gray histograms (0..2) above which a pair is a cut

FEATURE_NAMES = (
    "flow_mag_mean",
    "flow_mag_p95",
    "flow_mag_max",
    "moving_fraction",
    "direction_coherence",
    "motion_prob_mean",
    "motion_prob_max",
    "novelty_mean",
    "novelty_max",
    "scene_cuts",
    "brightness_mean",
    "brightness_change",
    "flow_frames",
    "flow_pairs",
    "cnn_frames",
)
# Per-second motion beside the window's features: "motion_s<k>" = mean flow magnitude (px per frame
# interval at 320 px) of the pairs whose later frame falls in second k of the window. Seconds with
# no pair have no key. Fusion finds a moment's peak and boundaries at 1 s from these.
SECOND_PREFIX = "motion_s"


@dataclass(frozen=True)
class PairStats:
    """Motion statistics of one flow field (frame t -> t+1)."""

    mag_mean: float
    mag_p99: float
    moving_fraction: float
    coherence: float
    moving_pixels: int
    sample: np.ndarray  # subsampled magnitudes for the window's percentile


def flow_pair_stats(flow: np.ndarray, time_scale: float = 1.0) -> PairStats:
    """Statistics of a flow field [2,H,W] in pixels; `time_scale` = nominal interval / actual interval."""
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be [2,H,W], got shape {flow.shape}")
    h, w = flow.shape[1:]
    b = BORDER if min(h, w) > 4 * BORDER else 0
    f = flow[:, b : h - b, b : w - b].astype(np.float32) * (REFERENCE_WIDTH / w * time_scale)
    mag = np.hypot(f[0], f[1])
    moving = mag > MOVING_THRESHOLD
    n_moving = int(moving.sum())
    coherence = 0.0
    if n_moving >= MIN_MOVING_SHARE * mag.size:
        # one component at a time: f[:, moving] (a 2-D mask under a leading axis) took numpy's
        # slow indexing path, 1.1 ms of a pair's 2.4; the same values, so the same means
        m = mag[moving]
        coherence = float(np.hypot((f[0][moving] / m).mean(), (f[1][moving] / m).mean()))
    return PairStats(
        mag_mean=float(mag.mean()),
        mag_p99=float(np.percentile(mag, 99)),
        moving_fraction=n_moving / mag.size,
        coherence=coherence,
        moving_pixels=n_moving,
        sample=mag[::SAMPLE_STEP, ::SAMPLE_STEP].ravel(),
    )


def gray_histogram(gray: np.ndarray) -> np.ndarray:
    """Normalised 32-bin histogram of a uint8 gray frame."""
    hist = np.bincount((gray.ravel() >> 3).astype(np.int64), minlength=HIST_BINS).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """L1 distance of two normalised histograms, 0 (same) .. 2 (disjoint)."""
    return float(np.abs(a - b).sum())


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cos(a, b) for two embeddings (0 same direction .. 2 opposite)."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(np.dot(a, b)) / denom if denom > 0 else 0.0


@dataclass
class WindowAccumulator:
    """Collects one window's measurements and turns them into the feature dict."""

    pairs: list[PairStats] = field(default_factory=list)
    motion_probs: list[float] = field(default_factory=list)
    novelties: list[float] = field(default_factory=list)
    brightness: list[float] = field(default_factory=list)
    brightness_deltas: list[float] = field(default_factory=list)
    scene_cuts: int = 0
    cnn_frames: int = 0
    per_second: dict[int, list[float]] = field(default_factory=dict)  # second of the window -> pair magnitudes

    def add_pair(self, stats: PairStats, motion_prob: float, second: int | None = None) -> None:
        self.pairs.append(stats)
        self.motion_probs.append(motion_prob)
        if second is not None:
            self.per_second.setdefault(second, []).append(stats.mag_mean)

    def features(self) -> dict[str, float]:
        out = dict.fromkeys(FEATURE_NAMES, 0.0)
        if self.pairs:
            means = np.array([p.mag_mean for p in self.pairs])
            weights = np.array([p.moving_pixels for p in self.pairs], dtype=np.float64)
            coherences = np.array([p.coherence for p in self.pairs])
            out["flow_mag_mean"] = float(means.mean())
            out["flow_mag_p95"] = float(np.percentile(np.concatenate([p.sample for p in self.pairs]), 95))
            out["flow_mag_max"] = max(p.mag_p99 for p in self.pairs)
            out["moving_fraction"] = float(np.mean([p.moving_fraction for p in self.pairs]))
            out["direction_coherence"] = float((coherences * weights).sum() / weights.sum()) if weights.sum() > 0 else 0.0
            out["motion_prob_mean"] = float(np.mean(self.motion_probs))
            out["motion_prob_max"] = float(np.max(self.motion_probs))
        if self.novelties:
            out["novelty_mean"] = float(np.mean(self.novelties))
            out["novelty_max"] = float(np.max(self.novelties))
        if self.brightness:
            out["brightness_mean"] = float(np.mean(self.brightness))
        if self.brightness_deltas:
            out["brightness_change"] = float(np.mean(self.brightness_deltas))
        out["scene_cuts"] = float(self.scene_cuts)
        out["flow_frames"] = float(len(self.brightness))
        out["flow_pairs"] = float(len(self.pairs))
        out["cnn_frames"] = float(self.cnn_frames)
        for k in sorted(self.per_second):
            out[f"{SECOND_PREFIX}{k}"] = float(np.mean(self.per_second[k]))
        return out
