"""Command-line tools behind `streamsight chat score` and `streamsight chat backtest`.

- `score_main`: messages on stdin, one per line -> JSON lines {"text", "compound", "label"}
  on stdout; the tool a person uses to check the lexicon.
- `backtest_main FILE`: a chat log in any supported format -> forecast MSE of the LSTM,
  the running mean and persistence, and their ratios to the running mean.

Both return a process exit code (0 ok, 2 bad input) instead of raising.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from services.chat.forecast import HORIZON, MODEL_PATH, ForecastModel, backtest
from services.chat.replay import FORMATS, ReplayFormatError, load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.windows import series_from_messages


def score_main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamsight chat score", description="Score chat lines read on stdin.")
    parser.parse_args(argv)
    src, out = stdin or sys.stdin, stdout or sys.stdout
    scorer = ChatSentiment()
    for line in src:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        s = scorer.score(text)
        out.write(json.dumps({"text": text, "compound": s.compound, "label": s.label}, ensure_ascii=False) + "\n")
    out.flush()
    return 0


def backtest_main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamsight chat backtest",
        description=f"Forecast error (horizons 1..{HORIZON} of 30 s intervals) on a chat log.",
    )
    parser.add_argument("file", type=Path, help="chat log (format detected)")
    parser.add_argument("--format", choices=FORMATS, default=None, help="skip detection")
    parser.add_argument("--model", type=Path, default=MODEL_PATH, help="forecaster ONNX file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        msgs = load_replay(args.file, args.format)
        model = ForecastModel(args.model)
    except (ReplayFormatError, FileNotFoundError, ValueError) as exc:
        err.write(f"error: {exc}\n")
        return 2
    points = series_from_messages(msgs)
    result = backtest([(p.mean_compound, p.messages) for p in points], model)
    if result.evals == 0:
        err.write(f"error: {args.file}: too short for a backtest ({len(points)} intervals of 30 s)\n")
        return 2
    ratios = result.ratios()
    if args.json:
        out.write(json.dumps({"file": str(args.file), "messages": len(msgs), "intervals": result.intervals,
                              "evals": result.evals, "mse": result.mse, "ratio_to_running_mean": ratios}) + "\n")
        return 0
    out.write(f"{args.file}: {len(msgs)} messages, {result.intervals} intervals of 30 s, {result.evals} forecasts scored\n")
    out.write(f"{'method':<14}{'MSE':>12}{'ratio':>10}\n")
    for name in ("lstm", "running_mean", "persistence"):
        out.write(f"{name:<14}{result.mse[name]:>12.6f}{ratios[name]:>10.3f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(score_main())
