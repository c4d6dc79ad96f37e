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


# -- moments -----------------------------------------------------------------------------
# Moment-level judgement of the whole highlight path (window model + services.fusion.moments),
# on generated streams with planted moments (training.fusion.moment_synth):
#
#     python -m training.fusion.evaluate [--work DIR] [--tune 3000-3003] [--test 6000-6005]
#
# The chat reaction lag is estimated on the tune streams from the data alone (no labels): the
# delay from each audio+motion peak to the start of the chat burst after it. The held-out test
# streams are judged with the shipped models and the service's HighlightTracker: a highlight
# matches a planted moment it overlaps (one each); precision, recall, F1, the boundary error
# (|start - planted start| and |end - planted end|, seconds) and the highlights lying on a
# distractor and on no moment.


def stream_rows(rows: dict[tuple[str, int], dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for (stream, window), row in sorted(rows.items()):
        by.setdefault(stream, []).append({**row, "window": window})
    return by


def score_stream(windows: list[dict], models: Sequence[FusionModel]):
    """ScoredWindows of one stream, each scored by the model the service would pick."""
    from services.fusion.model import choose

    out = []
    for row in windows:
        model = choose(list(models), set(row["modalities"]))
        p = model.predict(row["features"])
        out.append(ScoredWindow(row["window"], row["start_s"], row["end_s"], p.probability, tuple(p.top(5)), (), dict(row["features"])))
    return out


def track(scored: list, config: HighlightConfig, live: bool = False) -> list:
    tracker = HighlightTracker(config, live=live)
    spans = []
    for s in scored:
        spans += tracker.add(s)
    return spans + tracker.finish()


def estimate_chat_lag(rows: dict[tuple[str, int], dict], moment_config=None, max_lag_s: int = 15) -> dict:
    """The delay from audio+motion peaks to chat's burst, from the data alone: for every peak with
    both cues, the first second 0..max_lag_s after it where chat's z-score reaches chat_z."""
    from services.fusion.moments import Curves, MomentConfig, Series

    mc = moment_config or MomentConfig()
    lags: list[int] = []
    for windows in stream_rows(rows).values():
        series = Series()
        for row in windows:
            series.add(row["start_s"], row["features"])
        curves = Curves(series)
        end = max((max(v) for v in series.values.values() if v), default=0) + 1
        last = -100
        for t in range(end):
            e = curves.excitement(t)
            if e < mc.peak_z or e < max(curves.excitement(u) for u in range(t - 2, t + 3)) or t - last < 10:
                continue
            if not (curves.audio(t) >= mc.cue_z or any(curves.audio(u) >= mc.cue_z for u in range(t - 2, t + 3))):
                continue
            if not any(curves.z("motion", u) >= mc.cue_z for u in range(t - 2, t + 4)):
                continue
            last = t
            onset = next((u for u in range(t, t + max_lag_s + 1) if curves.z("chat", u) >= mc.chat_z), None)
            if onset is not None:
                lags.append(onset - t)
    a = np.array(lags, dtype=np.float64)
    if not a.size:
        return {"peaks_with_a_reaction": 0}
    q = np.percentile(a, [5, 25, 50, 75, 95])
    return {"peaks_with_a_reaction": int(a.size), "median_s": float(q[2]), "iqr_s": [float(q[1]), float(q[3])],
            "p5_p95_s": [float(q[0]), float(q[4])], "mean_s": round(float(a.mean()), 2), "std_s": round(float(a.std()), 2)}


def moment_metrics(spans_by_stream: dict[str, list], plans: Sequence[dict]) -> dict:
    """Highlights against planted moments (see the block comment above)."""
    n_pred = n_true = matched = distractors = 0
    start_err: list[float] = []
    end_err: list[float] = []
    lag_err: list[float] = []
    for plan in plans:
        spans = spans_by_stream.get(plan["stream"], [])
        truth = [m for m in plan["moments"] if m["kind"] == "highlight"]
        decoys = [m for m in plan["moments"] if m["kind"] != "highlight"]
        n_pred += len(spans)
        n_true += len(truth)
        free = list(truth)
        for span in sorted(spans, key=lambda s: -s.score):
            overlap = [(min(span.end_s, m["end"]) - max(span.start_s, m["start"]), k) for k, m in enumerate(free)]
            overlap = [o for o in overlap if o[0] > 0]
            if overlap:
                m = free.pop(max(overlap)[1])
                matched += 1
                start_err.append(abs(span.start_s - m["start"]))
                end_err.append(abs(span.end_s - m["end"]))
                lag = plan["lags"].get(str(m["start"]))
                if lag is not None and span.chat_lag_s:
                    lag_err.append(abs(span.peak_s + span.chat_lag_s - (m["start"] + lag)))
            elif any(min(span.end_s, d["end"]) > max(span.start_s, d["start"]) for d in decoys):
                distractors += 1
    p = matched / n_pred if n_pred else 0.0
    r = matched / n_true if n_true else 0.0
    both = np.array(start_err + end_err) if start_err else np.zeros(0)
    return {
        "precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "highlights": n_pred, "moments": n_true, "matched": matched, "distractors_reported": distractors,
        "boundary_error_median_s": round(float(np.median(both)), 2) if both.size else None,
        "boundary_error_p90_s": round(float(np.percentile(both, 90)), 2) if both.size else None,
        "start_error_median_s": round(float(np.median(start_err)), 2) if start_err else None,
        "end_error_median_s": round(float(np.median(end_err)), 2) if end_err else None,
        "chat_onset_error_median_s": round(float(np.median(lag_err)), 2) if lag_err else None,
    }


def lagged_chat_auc(rows: dict[tuple[str, int], dict], plans: Sequence[dict], lags: Sequence[int] = (0, 2, 4, 5, 6)) -> dict:
    """How well chat separates windows holding a planted moment from the rest (ROC AUC), counting
    the window's own messages and the messages `lag` seconds later: chat reacts after the moment."""
    from sklearn.metrics import roc_auc_score

    truth = {p["stream"]: [m for m in p["moments"] if m["kind"] == "highlight"] for p in plans}
    y: list[int] = []
    counts: dict[int, list[float]] = {lag: [] for lag in lags}
    for stream, windows in stream_rows(rows).items():
        per = {int(round(w["start_s"])) + int(k.rsplit("_s", 1)[1]): v for w in windows
               for k, v in w["features"].items() if k.startswith("chat.chat_messages_s")}
        for w in windows:
            a, b = w["start_s"], w["end_s"]
            y.append(int(any(min(b, m["end"]) - max(a, m["start"]) >= min(3.0, (m["end"] - m["start"]) / 2) for m in truth.get(stream, []))))
            for lag in lags:
                counts[lag].append(sum(per.get(t, 0.0) for t in range(int(a) + lag, int(b) + lag)))
    if len(set(y)) < 2:
        return {}
    return {f"lag_{lag}s": round(float(roc_auc_score(y, counts[lag])), 3) for lag in lags}


def evaluate_moments(features: str, plans_path: str, models: Sequence[FusionModel], config: HighlightConfig, live: bool = False) -> tuple[dict, dict]:
    """(metrics, spans by stream) of the highlight path on one generated set."""
    import json

    from training.fusion import records

    rows = records.to_rows(records.read_jsonl(features))
    plans = json.loads(open(plans_path, encoding="utf-8").read())
    spans = {stream: track(score_stream(windows, models), config, live) for stream, windows in stream_rows(rows).items()}
    out = moment_metrics(spans, plans)
    latency = [s.latency_s for v in spans.values() for s in v if s.resolution == "moment"]
    out["latency_median_s"] = round(float(np.median(latency)), 2) if latency else None
    out["latency_max_s"] = round(float(np.max(latency)), 2) if latency else None
    return out, spans


def main(argv: list[str] | None = None) -> dict:
    import argparse
    import json
    from pathlib import Path

    from services.fusion.moments import MomentConfig
    from services.fusion.settings import MODELS
    from training.fusion import moment_synth, records

    repo = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description="moment-level evaluation of fusion's highlights on generated streams")
    p.add_argument("--work", type=Path, default=repo / "build" / "fusion-moments")
    p.add_argument("--tune", default="3000-3003", help="seeds first-last: streams the chat lag is estimated on")
    p.add_argument("--test", default="6000-6005", help="seeds first-last: held-out streams judged")
    p.add_argument("--sounds", type=Path, default=repo.parent / "shared" / "data" / "sounds")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)

    def seeds(text: str) -> list[int]:
        lo, _, hi = text.partition("-")
        return list(range(int(lo), int(hi or lo) + 1))

    tune = moment_synth.generate(args.work, "tune", seeds(args.tune), args.sounds)
    test = moment_synth.generate(args.work, "test", seeds(args.test), args.sounds)
    lag = estimate_chat_lag(records.to_rows(records.read_jsonl(tune[0])))
    models = [FusionModel.load(MODELS / "default.json"), FusionModel.load(MODELS / "default_av.json")]
    config = HighlightConfig(threshold=models[0].threshold, moments=MomentConfig())
    report = {"chat_lag_tune": lag, "chat_lag_test": estimate_chat_lag(records.to_rows(records.read_jsonl(test[0])))}
    report["chat_auc_by_lag_test"] = lagged_chat_auc(records.to_rows(records.read_jsonl(test[0])), json.loads(test[1].read_text()))
    report["file"], _ = evaluate_moments(str(test[0]), str(test[1]), models, config)
    report["live"], _ = evaluate_moments(str(test[0]), str(test[1]), models, config, live=True)
    report["live"]["wait_s"] = config.wait_s(True)
    for wait in (0.0, 5.0):  # what the live wait buys and costs
        shorter = HighlightConfig(threshold=config.threshold, live_wait_s=wait, moments=config.moments)
        report[f"live_wait_{wait:g}"], _ = evaluate_moments(str(test[0]), str(test[1]), models, shorter, live=True)
    report["file"]["wait_s"] = config.wait_s(False)
    old = HighlightConfig(threshold=models[0].threshold)
    rows = records.to_rows(records.read_jsonl(test[0]))
    plans = json.loads(test[1].read_text())
    no_seconds = {s: [{**r, "features": {k: v for k, v in r["features"].items() if not k.rsplit("_s", 1)[-1].isdigit()}} for r in w]
                  for s, w in stream_rows(rows).items()}
    report["windows_only"] = moment_metrics({s: track(score_stream(w, models), old) for s, w in no_seconds.items()}, plans)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
