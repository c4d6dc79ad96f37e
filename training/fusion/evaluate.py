"""Fitting and judging the fusion model: grouped cross-validation, held-out metrics, feature weights.

`fit` trains standardisation + logistic regression (scikit-learn, balanced class weights)
and returns the JSON-able `FusionModel`; missing values take the training mean, the same
imputation the service applies. `cross_validate` uses GroupKFold by stream: the windows of
one stream are never in both the train and the test fold (neighbouring windows are nearly
copies of each other, so a shuffled split would leak). Metrics: precision, recall, F1 at the
threshold, PR-AUC (average precision), and per-highlight (event) precision/recall/F1 when
interval labels are given: a predicted highlight counts when it overlaps a labelled one.

The published baseline this is printed beside: F1 0.44, logistic regression on 21 chat,
audio and motion features with shuffled cross-validation (so, if anything, optimistic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_fscore_support
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from services.fusion.highlights import HighlightConfig, HighlightTracker, ScoredWindow
from services.fusion.model import FusionModel
from training.fusion.dataset import Dataset
from training.fusion.labels import Interval

BASELINE_F1 = 0.44
BASELINE_NOTE = "published baseline: logistic regression, 21 chat/audio/motion features, shuffled CV"


@dataclass
class Metrics:
    precision: float
    recall: float
    f1: float
    pr_auc: float
    positives: int
    windows: int
    threshold: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _impute_mean(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(X), X, np.nan), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    return np.where(np.isfinite(X), X, mean), mean


def fit(ds: Dataset, C: float = 1.0, version: str = "fusion@dev", threshold: float = 0.5, metadata: dict | None = None) -> FusionModel:
    if len(set(ds.y.tolist())) < 2:
        raise ValueError("training needs both highlight and non-highlight windows")
    X, _ = _impute_mean(ds.X)
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(scaler.transform(X), ds.y)
    return FusionModel(
        features=list(ds.features), coefficients=clf.coef_[0], intercept=float(clf.intercept_[0]),
        mean=scaler.mean_, scale=scaler.scale_, version=version, threshold=threshold, metadata=dict(metadata or {}),
    )


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> Metrics:
    pred = (p >= threshold).astype(int)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    pr_auc = float(average_precision_score(y, p)) if y.any() else float("nan")
    return Metrics(float(prec), float(rec), float(f1), pr_auc, int(y.sum()), int(len(y)), float(threshold))


def splits(ds: Dataset, folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold by stream: (train rows, test rows) per fold; no stream is on both sides."""
    n_groups = len(set(ds.groups.tolist()))
    if n_groups < 2:
        raise ValueError("grouped cross-validation needs windows from at least 2 streams")
    return list(GroupKFold(n_splits=min(folds, n_groups)).split(ds.X, ds.y, ds.groups))


def out_of_fold(ds: Dataset, folds: int = 5, C: float = 1.0) -> np.ndarray:
    """Probabilities for every row from a model that never saw the row's stream."""
    p = np.zeros(len(ds))
    for train, test in splits(ds, folds):
        model = fit(ds.select(train), C)
        p[test] = model.predict_proba(ds.X[test])
    return p


def with_threshold(model: FusionModel, threshold: float) -> FusionModel:
    """The same decisions with the threshold folded into the intercept, so that 0.5 is the
    boundary for every shipped model (the service compares all models' scores to one threshold)."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    shift = float(np.log(t / (1 - t)))
    meta = {**model.metadata, "threshold_folded": round(t, 6)}
    return FusionModel(model.features, model.coefficients, model.intercept - shift, model.mean, model.scale, model.version, 0.5, meta)


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the best F1 (ties: the higher threshold)."""
    best, best_f1 = 0.5, -1.0
    for t in np.unique(np.round(p, 4)):
        f1 = metrics(y, p, float(t)).f1
        if f1 >= best_f1:
            best, best_f1 = float(t), f1
    return best


def event_metrics(ds: Dataset, p: np.ndarray, intervals: Sequence[Interval], threshold: float) -> dict:
    """Highlight-level precision/recall/F1: the service's run + NMS logic over the window scores,
    matched to labelled highlights by overlap (one match each)."""
    config = HighlightConfig(threshold=min(max(threshold, 1e-6), 1 - 1e-6))
    tp_pred = n_pred = 0
    found: set[tuple[str, float]] = set()
    positives = [iv for iv in intervals if iv.positive]
    streams = sorted(set(ds.groups.tolist()))
    for stream in streams:
        rows = np.flatnonzero(ds.groups == stream)
        rows = rows[np.argsort(ds.windows[rows])]
        tracker = HighlightTracker(config)
        spans = []
        for r in rows:
            w = int(ds.windows[r])
            spans += tracker.add(ScoredWindow(w, 10.0 * w, 10.0 * w + 10.0, float(p[r])))
        spans += tracker.finish()
        truth = [iv for iv in positives if iv.stream == stream]
        for span in spans:
            n_pred += 1
            hits = [iv for iv in truth if min(span.end_s, iv.end) > max(span.start_s, iv.start)]
            if hits:
                tp_pred += 1
                found.update((iv.stream, iv.start) for iv in hits)
    n_true = sum(1 for iv in positives if iv.stream in streams)
    precision = tp_pred / n_pred if n_pred else 0.0
    recall = len(found) / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "predicted": n_pred, "labelled": n_true}


def weights(model: FusionModel, top: int | None = None) -> list[tuple[str, float]]:
    """Features by the size of their (standardised) coefficient."""
    pairs = sorted(zip(model.features, model.coefficients.tolist()), key=lambda kv: -abs(kv[1]))
    return pairs[:top] if top else pairs


def format_report(title: str, m: Metrics, extra: dict | None = None) -> str:
    line = (f"{title:<34} P {m.precision:.3f}  R {m.recall:.3f}  F1 {m.f1:.3f}  PR-AUC {m.pr_auc:.3f}  "
            f"(windows {m.windows}, positives {m.positives}, threshold {m.threshold:.3f})")
    if extra:
        line += f"\n{'':<34} highlights: P {extra['precision']:.3f}  R {extra['recall']:.3f}  F1 {extra['f1']:.3f}  ({extra['predicted']} found, {extra['labelled']} labelled)"
    return line
