"""How far chat alone can forecast its own activity (messages/s) 30, 60 and 90 s ahead.

Run: `python -m training.chat.activity_study [--data ../shared/data/chat/nlss]`
(writes training/chat/activity_study.json; about 20 s on one core).

The forecaster's activity output has matched the running mean (MSE ratio about 1.0 on
the held-out replays) while the issue asks for 0.8 of the better simple baseline. This
study measures, on the same 30 s series and scoring as `forecast.backtest` (origins
t >= 2, horizons 1..3, the rate in interval t + h):

1. **Bounds that no causal chat forecaster can beat by much**, on every video: the
   hindsight mean (the video's whole-run mean rate, known in advance) and an in-sample
   least-squares fit of the hype features below on the video itself (fitted on the very
   errors it is scored on, so optimistic).
2. **A ridge forecaster on hype features**, trained on the training videos only (their
   series cut on 0/10/20 s grids), its penalty chosen by leave-one-training-video-out,
   scored per held-out video and horizon: with and without the chat-only proxy of a
   highlight just detected (a burst: a 10 s window with `chat_rate_z` >= BURST_Z, the time
   since it and an exponentially decaying excess rate).
3. **How fast a burst decays**, at 10 s resolution: the mean rate k windows after a
   burst window, relative to the running mean (all videos pooled).

Features per origin (relative to the running mean rate `rm`): the last interval's and
the one before's relative rate, the last two 10 s windows' relative rates, the decaying
excess, the burst proxy (exp(-intervals since burst / 2)), duplicate ratio, emote density,
copy-pasta share, log(1 + intervals seen) and 1 / intervals seen, log(1 + rm).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from services.chat.message import ChatMessage
from services.chat.replay import load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.windows import ChatAggregator
from training.chat.train_forecast import DEFAULT_DATA, HELD_OUT, VIDEOS

HERE = Path(__file__).resolve().parent
WARMUP = 2
HORIZON = 3
BURST_Z = 2.0
LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
BURST_COLUMNS = (6, 7)  # decaying excess, burst proxy: dropped in the "no burst proxy" ablation


def chat_of(msgs: list[ChatMessage], scorer: ChatSentiment, shift: float = 0.0) -> tuple[list[dict], np.ndarray]:
    """The 10 s window features and the 30 s rate series (messages/s) of one log."""
    shifted = [ChatMessage(m.media_time - shift, m.user, m.text, m.emotes) for m in msgs if m.media_time >= shift]
    agg = ChatAggregator(scorer)
    agg.add_batch(shifted)
    windows, points = agg.flush()
    return [f for _, f in windows], np.array([p.messages / 30.0 for p in points])


def rows(windows: list[dict], rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per scored (origin, horizon): features, relative target, running mean, base, truth, last value, horizon."""
    x, y, rm_, base_, truth, last, hs = [], [], [], [], [], [], []
    since, excess = 10.0, 0.0
    for t in range(len(rate)):
        n = t + 1
        rm = float(rate[:n].mean())
        base = max(rm, 1.0 / 30.0)
        ws = windows[3 * t : 3 * t + 3]
        w10 = [w["chat_messages"] / 10.0 for w in ws] + [0.0] * (3 - len(ws))
        burst = max([w["chat_rate_z"] for w in ws] or [0.0]) >= BURST_Z
        since = 0.0 if burst else since + 1.0
        rel = min(rate[t] / base - 1.0, 3.0)
        excess = 0.6 * excess + rel

        def mean_of(key: str) -> float:
            return float(np.mean([w[key] for w in ws])) if ws else 0.0

        feats = [
            1.0, rel, min(w10[-1] / base - 1.0, 3.0), min(w10[-2] / base - 1.0, 3.0),
            math.log1p(n) / 5.0, 1.0 / n, excess / 3.0, math.exp(-since / 2.0),
            mean_of("chat_duplicate_ratio"), mean_of("chat_emote_density") / 3.0, mean_of("chat_copypasta_share"),
            min(rate[t - 1] / base - 1.0, 3.0) if t else 0.0, math.log1p(rm),
        ]
        if t < WARMUP:
            continue
        for h in range(1, HORIZON + 1):
            if t + h < len(rate):
                x.append(feats)
                y.append((rate[t + h] - rm) / base)
                rm_.append(rm)
                base_.append(base)
                truth.append(rate[t + h])
                last.append(rate[t])
                hs.append(h)
    return tuple(np.array(a, dtype=float) for a in (x, y, rm_, base_, truth, last, hs))  # type: ignore[return-value]


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    penalty = lam * np.eye(x.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


def scores(pred: np.ndarray, r: tuple) -> dict:
    """MSE ratio to the better baseline, overall and per horizon (the baseline chosen per
    scope, as `SeriesBacktest.ratio_to_best`)."""
    _, _, rm, _, truth, last, hs = r
    out = {}
    for name, sel in [("all", np.ones_like(hs, dtype=bool))] + [(f"h{h}", hs == h) for h in range(1, HORIZON + 1)]:
        e = float(np.mean((pred[sel] - truth[sel]) ** 2))
        best = min(float(np.mean((rm[sel] - truth[sel]) ** 2)), float(np.mean((last[sel] - truth[sel]) ** 2)))
        out[name] = round(e / best, 3)
    return out


def predict(x: np.ndarray, coef: np.ndarray, r: tuple) -> np.ndarray:
    return r[2] + r[3] * np.clip(x @ coef, -1.0, 3.0)


def burst_decay(per_video: dict[str, tuple[list[dict], np.ndarray]], lags: int = 9) -> dict:
    """Mean 10 s rate k windows after a burst window, over the running mean of the windows
    before the burst (1.0 = back at the baseline)."""
    acc = [[] for _ in range(lags + 1)]
    for windows, _ in per_video.values():
        counts = np.array([w["chat_messages"] for w in windows])
        for i, w in enumerate(windows):
            if i >= 3 and w["chat_rate_z"] >= BURST_Z:
                base = max(counts[:i].mean(), 0.1)
                for k in range(lags + 1):
                    if i + k < len(counts):
                        acc[k].append(counts[i + k] / base)
    return {"bursts": len(acc[0]), "relative_rate_after_k_windows": [round(float(np.mean(a)), 2) for a in acc]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "activity_study.json")
    args = parser.parse_args(argv)
    scorer = ChatSentiment()
    logs = {v: load_replay(args.data / f"rechat-{v}.json") for v in VIDEOS}
    plain = {v: chat_of(logs[v], scorer) for v in VIDEOS}
    scored = {v: rows(*plain[v]) for v in VIDEOS}
    train_ids = [v for v in VIDEOS if v not in HELD_OUT]
    shifted = {v: [rows(*chat_of(logs[v], scorer, s)) for s in (0.0, 10.0, 20.0)] for v in train_ids}

    bounds = {}
    for v, r in scored.items():
        x, y = r[0], r[1]
        hindsight = np.full_like(r[4], float(plain[v][1].mean()))
        bounds[v] = {"hindsight_mean": scores(hindsight, r), "in_sample_least_squares": scores(predict(x, ridge(x, y, 1e-6), r), r)}

    def fit_and_score(columns: list[int]) -> dict:
        cv = {}
        for lam in LAMBDAS:
            folds = []
            for left in train_ids:
                tr = [q for v in train_ids if v != left for q in shifted[v]]
                coef = ridge(np.vstack([q[0][:, columns] for q in tr]), np.concatenate([q[1] for q in tr]), lam)
                folds.append(scores(predict(scored[left][0][:, columns], coef, scored[left]), scored[left])["all"])
            cv[lam] = float(np.mean(folds))
        lam = min(cv, key=cv.get)
        tr = [q for v in train_ids for q in shifted[v]]
        coef = ridge(np.vstack([q[0][:, columns] for q in tr]), np.concatenate([q[1] for q in tr]), lam)
        return {"lambda": lam, "cv_ratio": round(cv[lam], 3),
                "per_video": {v: scores(predict(scored[v][0][:, columns], coef, scored[v]), scored[v]) for v in VIDEOS}}

    every = list(range(scored[VIDEOS[0]][0].shape[1]))
    report = {
        "held_out_videos": HELD_OUT,
        "bounds": bounds,
        "ridge_hype_features": fit_and_score(every),
        "ridge_without_burst_proxy": fit_and_score([c for c in every if c not in BURST_COLUMNS]),
        "burst_decay_10s": burst_decay(plain),
        "lag1_autocorrelation_30s": {v: round(float(np.corrcoef(r[:-1], r[1:])[0, 1]), 2) for v, (_, r) in plain.items()},
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
