"""Training tables for the fusion model: joined feature rows plus labels, grouped by stream.

`build(rows, labels)` makes a `Dataset`: X (windows x features, NaN where a modality is
missing), y, the stream of every row (the group: windows of one stream never go to both
train and test), window indexes and the feature names. Bookkeeping features that describe
the input rather than the content (frame counts, audio coverage, absolute brightness) are
left out (`EXCLUDED`), and so are the per-second values (`PER_SECOND`: fusion's moments use them).

Weak labels (`weak_labels`): a window is labelled a highlight when chat reacts in it or in
the `lag_windows` windows after it: the message-rate z-score reaches `rate_z` and the
window has at least `emotes` laugh and hype emotes. Models trained on weak labels use only
the audio and vision features (the labels came from chat), so they score streams with no chat.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from training.fusion.labels import Interval, window_label

EXCLUDED = frozenset(
    {"vision.flow_frames", "vision.flow_pairs", "vision.cnn_frames", "vision.brightness_mean", "audio.audio_coverage"}
)


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    windows: np.ndarray
    features: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def select(self, mask: np.ndarray) -> "Dataset":
        return Dataset(self.X[mask], self.y[mask], self.groups[mask], self.windows[mask], self.features)


PER_SECOND = re.compile(r"_s\d+$")  # 1 s values (motion_s3, loudness_s3, chat_messages_s3): moments, not window scores


def feature_names(rows: dict[tuple[str, int], dict], modalities: Iterable[str] | None = None) -> list[str]:
    wanted = set(modalities) if modalities is not None else None
    names = {name for row in rows.values() for name in row["features"]}
    return sorted(n for n in names if n not in EXCLUDED and not PER_SECOND.search(n) and (wanted is None or n.split(".", 1)[0] in wanted))


def build(
    rows: dict[tuple[str, int], dict],
    label_of: Callable[[str, int, float, float], int],
    features: Sequence[str] | None = None,
    modalities: Iterable[str] | None = None,
) -> Dataset:
    """Rows (see records.to_rows) and a labelling function (stream, window, start, end) -> 0/1."""
    names = list(features) if features is not None else feature_names(rows, modalities)
    if not names:
        raise ValueError("no features to train on (are the records empty, or the modalities wrong?)")
    keys = sorted(rows)
    X = np.full((len(keys), len(names)), np.nan)
    index = {n: k for k, n in enumerate(names)}
    for r, key in enumerate(keys):
        for name, value in rows[key]["features"].items():
            k = index.get(name)
            if k is not None:
                X[r, k] = value
    y = np.array([label_of(s, w, rows[(s, w)]["start_s"], rows[(s, w)]["end_s"]) for s, w in keys], dtype=np.int64)
    return Dataset(X, y, np.array([s for s, _ in keys]), np.array([w for _, w in keys]), names)


def interval_labeller(intervals: Sequence[Interval], min_overlap_s: float = 3.0) -> Callable[[str, int, float, float], int]:
    def label(stream: str, window: int, start: float, end: float) -> int:
        return window_label(intervals, stream, start, end, min_overlap_s)

    return label


def weak_labels(rows: dict[tuple[str, int], dict], rate_z: float = 1.5, emotes: float = 3.0, lag_windows: int = 1) -> Callable[[str, int, float, float], int]:
    """Labels from the chat's reaction (see module doc); windows without chat are negative."""

    def reacts(stream: str, window: int) -> bool:
        row = rows.get((stream, window))
        if row is None:
            return False
        f = row["features"]
        z = f.get("chat.chat_rate_z", 0.0)
        n = f.get("chat.chat_emote_laugh", 0.0) + f.get("chat.chat_emote_hype", 0.0)
        return z >= rate_z and n >= emotes

    def label(stream: str, window: int, start: float, end: float) -> int:
        return int(any(reacts(stream, window + k) for k in range(lag_windows + 1)))

    return label
