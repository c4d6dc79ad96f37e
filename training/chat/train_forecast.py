"""Train the chat sentiment forecaster (LSTM) on real Twitch chat and export it to ONNX.

Run: `python -m training.chat.train_forecast [--data ../shared/data/chat/nlss] [--epochs N]`

Data: the five NLSS rechat replays. Each video becomes its 30 s sentiment series (the
service's own `series_from_messages`, so training sees exactly what the service computes).
Whole videos are held out for evaluation (HELD_OUT). Training series are augmented with
the same chat cut on grids shifted by 10 s and 20 s (more, overlapping, sequences; never
from held-out videos).

The model reads `step_features` per interval and predicts, for horizons 1..5, the
deviation of the future value from the running mean, so "predict nothing" is exactly the
running-mean baseline and the LSTM only has to learn corrections. Writes
services/chat/models/forecast.onnx and its MODEL.md card with held-out metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.chat.forecast import HORIZON, N_FEATURES, ForecastModel, backtest, step_features
from services.chat.message import ChatMessage
from services.chat.replay import load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.windows import series_from_messages

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chat" / "nlss"
OUT_DIR = REPO / "services" / "chat" / "models"
VIDEOS = ["84065913", "103227724", "115328018", "98355852", "158202424"]
HELD_OUT = ["98355852", "158202424"]  # The Culling, HITMAN: games not in the training videos
WARMUP = 2  # same as forecast.backtest: predictions before 3 intervals are not scored
SEED = 1234
HIDDEN = 16


GRID = [(hidden, epochs) for hidden in (4, 16) for epochs in (10, 40, 150)]


class Forecaster(nn.Module):
    """LSTM over step features -> HORIZON deviations from the running mean, per step."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, HORIZON)

    def forward(self, features: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        out, (h, c) = self.lstm(features, (h0, c0))
        return self.head(out), h, c


def series_of(msgs: list[ChatMessage], scorer: ChatSentiment, shift: float = 0.0) -> list[tuple[float, int]]:
    shifted = [ChatMessage(m.media_time - shift, m.user, m.text, m.emotes) for m in msgs if m.media_time >= shift]
    return [(p.mean_compound, p.messages) for p in series_from_messages(shifted, scorer)]


def tensors(series: list[tuple[float, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features [T, F], targets [T, H] (future minus running mean) and mask [T, H]."""
    values = np.array([v for v, _ in series], dtype=np.float64)
    rm = np.cumsum(values) / np.arange(1, len(values) + 1)
    feats = np.array([step_features(v, n, r) for (v, n), r in zip(series, rm)], dtype=np.float32)
    t_len = len(values)
    target = np.zeros((t_len, HORIZON), dtype=np.float32)
    mask = np.zeros((t_len, HORIZON), dtype=np.float32)
    for t in range(WARMUP, t_len):
        for h in range(1, HORIZON + 1):
            if t + h < t_len:
                target[t, h - 1] = values[t + h] - rm[t]
                mask[t, h - 1] = 1.0
    return torch.from_numpy(feats), torch.from_numpy(target), torch.from_numpy(mask)


def train(model: Forecaster, seqs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], epochs: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    losses = []
    rng = random.Random(SEED)
    for _ in range(epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        total = 0.0
        for i in order:
            x, y, m = seqs[i]
            h0 = torch.zeros(1, 1, model.lstm.hidden_size)
            pred, _, _ = model(x[None], h0, h0.clone())
            loss = ((pred[0] - y) ** 2 * m).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach())
        losses.append(total / len(seqs))
    return losses


def masked_mse_ratio(model: Forecaster, seqs: list) -> float:
    """LSTM MSE / running-mean MSE over the scored steps (the running mean predicts 0 deviation)."""
    num = den = 0.0
    with torch.no_grad():
        for x, y, m in seqs:
            h0 = torch.zeros(1, 1, model.lstm.hidden_size)
            pred, _, _ = model(x[None], h0, h0.clone())
            num += float(((pred[0] - y) ** 2 * m).sum())
            den += float((y**2 * m).sum())
    return num / den


def select(per_video: dict[str, list]) -> tuple[int, int, dict]:
    """Leave-one-training-video-out cross-validation over GRID (held-out videos never seen)."""
    scores = {}
    for hidden, epochs in GRID:
        ratios = []
        for left in per_video:
            torch.manual_seed(SEED)
            model = Forecaster(hidden)
            train(model, [s for v, seqs in per_video.items() if v != left for s in seqs], epochs)
            ratios.append(masked_mse_ratio(model, per_video[left][:1]))  # unshifted grid only
        scores[f"hidden={hidden},epochs={epochs}"] = float(np.mean(ratios))
    best = min(GRID, key=lambda g: scores[f"hidden={g[0]},epochs={g[1]}"])
    return best[0], best[1], scores


def export(model: Forecaster, path: Path) -> None:
    model.eval()
    x = torch.zeros(1, 7, N_FEATURES)
    h0 = torch.zeros(1, 1, model.lstm.hidden_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (x, h0, h0.clone()),
        str(path),
        input_names=["features", "h0", "c0"],
        output_names=["deviation", "hn", "cn"],
        dynamic_axes={"features": {1: "time"}, "deviation": {1: "time"}},
        opset_version=17,
        dynamo=False,
    )


def pooled(results: list) -> dict[str, float]:
    """MSE over the union of the videos' scored (interval, horizon) pairs."""
    evals = sum(r.evals for r in results)
    return {k: sum(r.mse[k] * r.evals for r in results) / evals for k in results[0].mse}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=0, help="0: choose hidden size and epochs by cross-validation")
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    scorer = ChatSentiment()
    logs = {v: load_replay(args.data / f"rechat-{v}.json") for v in VIDEOS}
    train_ids = [v for v in VIDEOS if v not in HELD_OUT]
    per_video = {v: [tensors(series_of(logs[v], scorer, s)) for s in (0.0, 10.0, 20.0)] for v in train_ids}
    hidden, epochs, cv = args.hidden, args.epochs, {}
    if epochs <= 0:
        hidden, epochs, cv = select(per_video)
    torch.manual_seed(SEED)
    model = Forecaster(hidden)
    losses = train(model, [s for seqs in per_video.values() for s in seqs], epochs)
    onnx_path = args.out / "forecast.onnx"
    export(model, onnx_path)

    onnx_model = ForecastModel(onnx_path)
    per_video = {}
    for v in VIDEOS:
        r = backtest(series_of(logs[v], scorer), onnx_model, warmup=WARMUP)
        per_video[v] = {"split": "held-out" if v in HELD_OUT else "train", "intervals": r.intervals,
                        "evals": r.evals, "mse": r.mse, "ratio_to_running_mean": r.ratios()}
    held = pooled([backtest(series_of(logs[v], scorer), onnx_model, warmup=WARMUP) for v in HELD_OUT])
    trained = pooled([backtest(series_of(logs[v], scorer), onnx_model, warmup=WARMUP) for v in train_ids])
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    report = {
        "held_out_videos": HELD_OUT,
        "train_videos": train_ids,
        "hidden": hidden,
        "epochs": epochs,
        "cv_ratio_to_running_mean": cv,
        "final_train_loss": losses[-1],
        "held_out_mse": held,
        "held_out_ratio_to_running_mean": {k: v / held["running_mean"] for k, v in held.items()},
        "train_mse": trained,
        "per_video": per_video,
        "sha256": digest,
        "size_bytes": onnx_path.stat().st_size,
    }
    (args.out / "forecast_metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    result = main()
    print(json.dumps({k: result[k] for k in ("hidden", "epochs", "cv_ratio_to_running_mean", "held_out_mse", "held_out_ratio_to_running_mean", "train_mse", "sha256")}, indent=1))
