"""Chat benchmark on the real NLSS chat: forecast error ratios and sentiment throughput.

Run: `python bench/bench_chat.py [--data ../shared/data/chat/nlss] [--repeat 3]`

1. Forecast: per video and series (sentiment, activity) the LSTM's MSE ratio to the
   better of running mean and persistence over horizons 30..90 s, and the coverage of
   the prediction intervals; pooled over the held-out videos and over all.
2. Sentiment: messages per second on one core (single thread) for plain VADER (the
   baseline, same run), our scorer without cache (every message scored afresh) and with
   its default cache, and for the whole window aggregation. Goal: >= 20,000 msg/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: E402

from services.chat.forecast import HORIZON, SERIES, ForecastModel, backtest  # noqa: E402
from services.chat.replay import load_replay  # noqa: E402
from services.chat.sentiment import ChatSentiment  # noqa: E402
from services.chat.windows import ChatAggregator, series_from_messages  # noqa: E402

HELD_OUT = ("98355852", "158202424")  # as in training/chat/train_forecast.py


def rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chat" / "nlss")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = sorted(args.data.glob("rechat-*.json"))
    if not files:
        raise SystemExit(f"no rechat-*.json files in {args.data}")
    logs = {f.stem.split("-")[1]: load_replay(f) for f in files}

    print(f"== forecast (30 s intervals, horizons 30..{30 * HORIZON} s; MSE ratio of the LSTM to the better baseline) ==")
    model = ForecastModel()
    scorer = ChatSentiment()
    results = {}
    print(f"{'video':<12}{'split':<10}{'evals':>6}" + "".join(f"{s[:4] + ' ratio':>12}{s[:4] + ' cov':>10}" for s in SERIES))
    for vid, msgs in logs.items():
        pts = series_from_messages(msgs, scorer)
        r = backtest([p.inputs() for p in pts], model)
        results[vid] = r
        split = "held-out" if vid in HELD_OUT else "train"
        print(f"{vid:<12}{split:<10}{r.series['sentiment'].evals:>6}"
              + "".join(f"{r.series[s].ratio_to_best():>12.3f}{r.series[s].coverage:>10.3f}" for s in SERIES))
    for name, ids in (("held-out", [v for v in results if v in HELD_OUT]), ("all", list(results))):
        if not ids:
            continue
        line = []
        for s in SERIES:
            ev = sum(results[v].series[s].evals for v in ids)
            mse = {k: sum(results[v].series[s].mse[k] * results[v].series[s].evals for v in ids) / ev
                   for k in ("lstm", "running_mean", "persistence")}
            cov = sum(results[v].series[s].coverage * results[v].series[s].evals for v in ids) / ev
            line.append(f"{s}: LSTM/best={mse['lstm'] / min(mse['running_mean'], mse['persistence']):.3f} "
                        f"persistence/running-mean={mse['persistence'] / mse['running_mean']:.3f} coverage={cov:.3f}")
        print(f"pooled {name:<9} " + "  ".join(line))

    print("\n== sentiment throughput (one thread) ==")
    msgs = [m for ms in logs.values() for m in ms]
    texts = [(m.text, m.emotes) for m in msgs]
    n = len(texts)
    vader = SentimentIntensityAnalyzer()
    base = rate(lambda: [vader.polarity_scores(t) for t, _ in texts], n, args.repeat)

    def uncached() -> None:
        s = ChatSentiment(cache_size=0)
        for t, e in texts:
            s.score(t, e)

    def cached() -> None:
        s = ChatSentiment()
        for t, e in texts:
            s.score(t, e)

    def aggregate() -> None:
        agg = ChatAggregator(ChatSentiment())
        agg.add_batch(msgs)
        agg.flush()

    cold = rate(uncached, n, args.repeat)
    warm = rate(cached, n, args.repeat)
    agg = rate(aggregate, n, args.repeat)
    probe = ChatSentiment(cache_size=0)
    for t, e in texts:
        probe.score(t, e)
    print(f"messages: {n} real chat lines ({len(set(t for t, _ in texts))} distinct)")
    print(f"plain VADER (baseline)      {base:>10.0f} msg/s")
    print(f"ChatSentiment, no cache     {cold:>10.0f} msg/s  ({cold / base:.2f}x VADER; VADER ran on "
          f"{probe.vader_calls / n:.0%} of messages)")
    print(f"ChatSentiment, with cache   {warm:>10.0f} msg/s  ({warm / base:.2f}x VADER)")
    print(f"windows + series (cached)   {agg:>10.0f} msg/s")
    print(f"goal >= 20,000 msg/s per core: {'met' if min(cold, warm) >= 20000 else 'NOT met'}")


if __name__ == "__main__":
    main()
