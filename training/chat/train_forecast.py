"""Train the chat forecaster (LSTM: sentiment and activity, 30/60/90 s) and export it to ONNX.

Run: `python -m training.chat.train_forecast [--data ../shared/data/chat/nlss]`

Data: the five NLSS rechat replays (DATA.md). Each video becomes its 30 s series by the
service's own `series_from_messages`; `forecast.SeriesState` turns it into the model's
step features, exactly as the service does. Whole videos are held out (HELD_OUT).
Training series are augmented with the same chat cut on grids shifted by 10 s and 20 s
(never from held-out videos).

The model predicts, for horizons 1..HORIZON, the sentiment's deviation from its running
mean shrunk towards the training chat's mean (weight chosen on the training videos) and
the rate's relative deviation from its running mean, so "predict nothing" is the
(shrunk) running-mean forecast. Hidden size and epochs are chosen by
leave-one-training-video-out cross-validation (scored with `forecast.backtest`, against
the better baseline). The prediction intervals' k (per series and horizon) is the
`LEVEL` quantile of |error| / scale on the same out-of-fold predictions, stored in the
ONNX file's metadata. Writes services/chat/models/forecast.onnx and
forecast_metrics.json; the card (MODEL.md) quotes the metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from services.chat.forecast import HORIZON, MAX_REL, N_FEATURES, SERIES, ForecastModel, SeriesState, backtest
from services.chat.message import ChatMessage
from services.chat.replay import load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.windows import series_from_messages

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chat" / "nlss"
OUT_DIR = REPO / "services" / "chat" / "models"
VIDEOS = ["84065913", "103227724", "115328018", "98355852", "158202424"]
HELD_OUT = ["98355852", "158202424"]  # The Culling, HITMAN: games not in the training videos
WARMUP = 2  # as forecast.backtest: predictions before 3 intervals are not scored
SEED = 1234
LEVEL = 0.8
GRID = [(hidden, epochs) for hidden in (8, 16) for epochs in (3, 6, 10)]
PRIOR_WEIGHTS = (0.0, 2.0, 5.0, 10.0, 20.0)
RIDGE_LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SCALE_PRIOR_WEIGHTS = (0.0, 2.0, 5.0, 10.0)  # intervals; candidates for the interval scale's shrinkage (SeriesState.scale)


def choose_prior(series: list[Series]) -> tuple[float, float, dict[str, float]]:
    """The training chat's mean sentiment per interval, and the weight (in intervals) that
    minimises the shrunk running mean's MSE at horizons 1..HORIZON, mean over the videos."""
    prior = float(np.mean([p[0] for s in series for p in s]))
    scores = {}
    for w in PRIOR_WEIGHTS:
        per = []
        for s in series:
            vals = [p[0] for p in s]
            err = []
            for t in range(WARMUP, len(vals)):
                anchor = (sum(vals[: t + 1]) + w * prior) / (t + 1 + w)
                err += [(anchor - vals[t + h]) ** 2 for h in range(1, HORIZON + 1) if t + h < len(vals)]
            per.append(np.mean(err))
        scores[str(w)] = float(np.mean(per))
    best = min(PRIOR_WEIGHTS, key=lambda w: scores[str(w)])
    return prior, best, scores


class Forecaster(nn.Module):
    """LSTM over step features -> HORIZON sentiment deviations and HORIZON relative rate
    deviations, plus a fixed linear map of the step features (`skip`: the activity ridge,
    fitted in closed form before the LSTM trains on what it leaves)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * HORIZON)
        self.skip = nn.Linear(N_FEATURES, 2 * HORIZON)
        for p in (self.head.weight, self.head.bias, self.skip.weight, self.skip.bias):
            nn.init.zeros_(p)  # start as the running-mean forecast
        self.skip.requires_grad_(False)

    def set_activity(self, coef: np.ndarray) -> None:
        """coef [1 + N_FEATURES, HORIZON] (intercept first) from `activity_ridge`."""
        with torch.no_grad():
            self.skip.weight[HORIZON:] = torch.tensor(coef[1:].T, dtype=torch.float32)
            self.skip.bias[HORIZON:] = torch.tensor(coef[0], dtype=torch.float32)

    def forward(self, features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        out, (h, c) = self.lstm(features, (h0, c0))
        return self.head(out) + self.skip(features), h, c


def activity_ridge(seqs: list, lam: float) -> np.ndarray:
    """Ridge (intercept not shrunk) of the rate's relative deviation at each horizon on the
    step features: [1 + N_FEATURES, HORIZON]. The LSTM alone, stopped early for the
    sentiment's sake, learned next to nothing of the rate (ratio 1.00 to the running mean)."""
    coef = np.zeros((N_FEATURES + 1, HORIZON))
    for h in range(HORIZON):
        col = HORIZON + h
        x = np.vstack([q[0][q[2][:, col] > 0].numpy() for q in seqs]).astype(np.float64)
        y = np.concatenate([q[1][q[2][:, col] > 0, col].numpy() for q in seqs]).astype(np.float64)
        x = np.hstack([np.ones((len(x), 1)), x])
        penalty = lam * np.eye(N_FEATURES + 1)
        penalty[0, 0] = 0.0
        coef[:, h] = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    return coef


Series = list[tuple[float, int, float, tuple[int, ...]]]  # SeriesPoint.inputs() per interval


def series_of(msgs: list[ChatMessage], scorer: ChatSentiment, shift: float = 0.0) -> Series:
    shifted = [ChatMessage(m.media_time - shift, m.user, m.text, m.emotes) for m in msgs if m.media_time >= shift]
    return [p.inputs() for p in series_from_messages(shifted, scorer)]


def tensors(series: Series, prior: tuple[float, float] = (0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features [T, F], targets [T, 2H] and mask [T, 2H], built with the service's SeriesState."""
    st = SeriesState(30.0, *prior)
    feats, means, bases = [], [], []
    for p in series:
        feats.append(st.update(*p))
        means.append((st.anchor(), st.mean[1]))
        bases.append(max(st.mean[1], 1.0 / st.interval_s))
    values = [p[0] for p in series]
    rates = [p[1] / st.interval_s for p in series]
    t_len = len(series)
    target = np.zeros((t_len, 2 * HORIZON), dtype=np.float32)
    mask = np.zeros((t_len, 2 * HORIZON), dtype=np.float32)
    for t in range(WARMUP, t_len):
        for h in range(1, HORIZON + 1):
            if t + h < t_len:
                target[t, h - 1] = values[t + h] - means[t][0]
                target[t, HORIZON + h - 1] = np.clip((rates[t + h] - means[t][1]) / bases[t], -1.0, MAX_REL)
                mask[t, h - 1] = mask[t, HORIZON + h - 1] = 1.0
    return torch.tensor(np.array(feats, dtype=np.float32)), torch.from_numpy(target), torch.from_numpy(mask)


def train(model: Forecaster, seqs: list, epochs: int, weights: torch.Tensor) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    rng = random.Random(SEED)
    losses = []
    for _ in range(epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        total = 0.0
        for i in order:
            x, y, m = seqs[i]
            h0 = torch.zeros(1, 1, model.lstm.hidden_size)
            pred, _, _ = model(x[None], h0, h0.clone())
            loss = (((pred[0] - y) ** 2) * m * weights).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach())
        losses.append(total / len(seqs))
    return losses


def export(model: Forecaster, path: Path, interval_k: dict[str, list[float]] | None = None, level: float = LEVEL,
           prior: tuple[float, float] = (0.0, 0.0), scale_prior: tuple[list[float], float] | None = None) -> None:
    model.eval()
    x = torch.zeros(1, 7, N_FEATURES)
    h0 = torch.zeros(1, 1, model.lstm.hidden_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (x, h0, h0.clone()), str(path),
        input_names=["features", "h0", "c0"], output_names=["forecast", "hn", "cn"],
        dynamic_axes={"features": {1: "time"}, "forecast": {1: "time"}},
        opset_version=17, dynamo=False,
    )
    meta = [("sentiment_prior", repr(prior[0])), ("sentiment_prior_weight", repr(prior[1]))]
    if interval_k is not None:
        meta += [("interval_k", json.dumps(interval_k)), ("interval_level", str(level))]
    if scale_prior is not None:
        meta += [("scale_prior", json.dumps(scale_prior[0])), ("scale_prior_weight", json.dumps(scale_prior[1]))]
    if any(prior) or interval_k is not None or scale_prior is not None:
        m = onnx.load(str(path))
        for key, value in meta:
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(m, str(path))


def loss_weights(seqs: list) -> torch.Tensor:
    """Each series' targets weighted by 1 / their variance, so both count alike."""
    ys = torch.cat([y[m > 0].reshape(-1, 2 * HORIZON) for _, y, m in seqs if (m > 0).any()])
    var = ys.var(0).clamp(min=1e-6)
    w = torch.ones(2 * HORIZON)
    w[:HORIZON] = 1.0 / var[:HORIZON].mean()
    w[HORIZON:] = 1.0 / var[HORIZON:].mean()
    return w / w.mean()


def scale_prior_of(series: list[Series]) -> list[float]:
    """The training chat's typical spread: median over videos of the sentiment's std and of
    the rate's std relative to its mean."""
    sent = [float(np.std([p[0] for p in s], ddof=1)) for s in series]
    rates = [np.array([p[1] / 30.0 for p in s]) for s in series]
    return [float(np.median(sent)), float(np.median([r.std(ddof=1) / max(r.mean(), 1 / 30) for r in rates]))]


def fit(seqs: list, hidden: int, epochs: int, lam: float | None = None) -> Forecaster:
    torch.manual_seed(SEED)
    model = Forecaster(hidden)
    if lam is not None:
        model.set_activity(activity_ridge(seqs, lam))
    if epochs:
        train(model, seqs, epochs, loss_weights(seqs))
    return model


def residuals(model: ForecastModel, series: Series) -> dict[str, list[list[float]]]:
    """|error| / scale per series and horizon over the scored predictions of one video."""
    stream = model.stream()
    out = {s: [[] for _ in range(HORIZON)] for s in SERIES}
    truth = {"sentiment": [p[0] for p in series], "activity": [p[1] / 30.0 for p in series]}
    for t, p in enumerate(series):
        f = stream.update(*p)
        if t < WARMUP:
            continue
        for i, name in enumerate(SERIES):
            scale = stream.series.scale(i)
            for h in range(1, HORIZON + 1):
                if t + h < len(series):
                    out[name][h - 1].append(abs(getattr(f, name).lstm[h - 1] - truth[name][t + h]) / scale)
    return out


def evaluate(model: ForecastModel, series: Series) -> dict:
    r = backtest(series, model, warmup=WARMUP)
    return {"intervals": r.intervals, **{s: r.series[s].as_dict() for s in SERIES}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/streamsight-forecast-cv"))
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    scorer = ChatSentiment()
    logs = {v: load_replay(args.data / f"rechat-{v}.json") for v in VIDEOS}
    plain = {v: series_of(logs[v], scorer) for v in VIDEOS}
    train_ids = [v for v in VIDEOS if v not in HELD_OUT]
    prior, prior_weight, prior_scores = choose_prior([plain[v] for v in train_ids])
    per_video = {v: [tensors(series_of(logs[v], scorer, s), (prior, prior_weight)) for s in (0.0, 10.0, 20.0)] for v in train_ids}

    # Leave one training video out: first the activity ridge's penalty (on its own), then
    # (hidden, epochs) with it; the out-of-fold residuals of every configuration are kept
    # for the interval calibration.
    ridge_cv: dict[str, float] = {}
    for lam in RIDGE_LAMBDAS:
        ratios_lam = []
        for left in train_ids:
            path = args.tmp / f"ridge={lam}-{left}.onnx"
            export(fit([q for v, seqs in per_video.items() if v != left for q in seqs], 8, 0, lam), path, prior=(prior, prior_weight))
            ratios_lam.append(backtest(plain[left], ForecastModel(path), warmup=WARMUP).series["activity"].ratio_to_best())
        ridge_cv[str(lam)] = float(np.mean(ratios_lam))
    best_lam = min(ridge_cv, key=ridge_cv.get)
    lam = float(best_lam) if ridge_cv[best_lam] < 1.0 else None  # a ridge that does not beat the running mean stays off
    cv: dict[str, dict] = {}
    oof: dict[str, dict] = {}
    for hidden, epochs in GRID:
        key = f"hidden={hidden},epochs={epochs}"
        ratios = {s: [] for s in SERIES}
        # residuals per scale shrinkage weight, series, fold, horizon
        res = {w: {s: {v: [[] for _ in range(HORIZON)] for v in train_ids} for s in SERIES} for w in SCALE_PRIOR_WEIGHTS}
        for left in train_ids:
            model = fit([q for v, seqs in per_video.items() if v != left for q in seqs], hidden, epochs, lam)
            path = args.tmp / f"{key}-{left}.onnx"
            export(model, path, prior=(prior, prior_weight), scale_prior=(scale_prior_of([plain[v] for v in train_ids if v != left]), [0.0, 0.0]))
            onnx_model = ForecastModel(path)
            r = backtest(plain[left], onnx_model, warmup=WARMUP)
            for s in SERIES:
                ratios[s].append(r.series[s].ratio_to_best())
            for w in SCALE_PRIOR_WEIGHTS:
                onnx_model.scale_prior_weight = (w, w)
                for s, per_h in residuals(onnx_model, plain[left]).items():
                    for h, vals in enumerate(per_h):
                        res[w][s][left][h].extend(vals)
        cv[key] = {s: float(np.mean(ratios[s])) for s in SERIES}
        oof[key] = res
    best_key = min(cv, key=lambda k: cv[k]["sentiment"] + cv[k]["activity"])
    hidden, epochs = (int(p.split("=")[1]) for p in best_key.split(","))
    # Split-conformal intervals: k per series and horizon is the LEVEL quantile of the pooled
    # out-of-fold |error| / scale; the scale's shrinkage weight per series is the one whose
    # worst training fold's coverage is nearest LEVEL.
    interval_k, scale_weights, fold_coverage = {}, [], {}
    for s in SERIES:
        ks, worst = {}, {}
        for w in SCALE_PRIOR_WEIGHTS:
            folds = oof[best_key][w][s]
            ks[w] = [float(np.quantile([x for v in train_ids for x in folds[v][h]], LEVEL)) for h in range(HORIZON)]
            cover = {v: float(np.mean([x <= ks[w][h] for h in range(HORIZON) for x in folds[v][h]])) for v in train_ids}
            fold_coverage[f"{s},w={w}"] = cover
            worst[w] = max(abs(c - LEVEL) for c in cover.values())
        w_best = min(SCALE_PRIOR_WEIGHTS, key=lambda w: worst[w])
        interval_k[s], _ = ks[w_best], scale_weights.append(w_best)

    model = fit([q for seqs in per_video.values() for q in seqs], hidden, epochs, lam)
    onnx_path = args.out / "forecast.onnx"
    scale_prior = (scale_prior_of([plain[v] for v in train_ids]), scale_weights)
    export(model, onnx_path, interval_k, LEVEL, (prior, prior_weight), scale_prior)
    onnx_model = ForecastModel(onnx_path)
    per = {v: {"split": "held-out" if v in HELD_OUT else "train", **evaluate(onnx_model, plain[v])} for v in VIDEOS}
    report = {
        "held_out_videos": HELD_OUT, "train_videos": train_ids, "hidden": hidden, "epochs": epochs,
        "activity_ridge_lambda": lam, "activity_ridge_cv_ratio": ridge_cv,
        "level": LEVEL, "interval_k": interval_k, "scale_prior": scale_prior[0], "scale_prior_weight": scale_prior[1], "oof_coverage": fold_coverage, "sentiment_prior": prior, "sentiment_prior_weight": prior_weight,
        "prior_weight_mse": prior_scores, "cv_ratio_to_best_baseline": cv, "per_video": per,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(), "size_bytes": onnx_path.stat().st_size,
    }
    (args.out / "forecast_metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    result = main()
    print(json.dumps({k: result[k] for k in ("hidden", "epochs", "scale_prior", "scale_prior_weight", "oof_coverage", "activity_ridge_lambda", "activity_ridge_cv_ratio", "interval_k", "sentiment_prior", "sentiment_prior_weight",
                                             "cv_ratio_to_best_baseline")}, indent=1))
    for v, row in result["per_video"].items():
        print(v, row["split"], " ".join(
            f"{s}: ratio {row[s]['ratio_to_best_baseline']:.3f} cov {row[s]['coverage']:.3f}" for s in SERIES))
