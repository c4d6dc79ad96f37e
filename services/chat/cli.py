"""Command-line tools behind `streamsight chat score` and `streamsight chat backtest`.

- `score_main`: messages on stdin, one per line -> JSON lines {"text", "compound", "label"}
  on stdout; the tool a person uses to check the lexicon (`--backend encoder`: the
  MiniLM backend).
- `backtest_main FILE...`: chat logs in any supported format -> per series ("sentiment",
  "activity") the forecast MSE of the LSTM, the running mean and persistence, the LSTM's
  ratio to the better baseline, and the prediction intervals' coverage.

Both return a process exit code (0 ok, 2 bad input) instead of raising.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from services.chat.encoder import EncoderSentiment
from services.chat.forecast import HORIZON, MODEL_PATH, SERIES, ForecastModel, backtest
from services.chat.replay import FORMATS, ReplayFormatError, load_replay
from services.chat.sentiment import ChatSentiment
from services.chat.windows import series_from_messages


def score_main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamsight chat score", description="Score chat lines read on stdin.")
    parser.add_argument("--backend", choices=("lexicon", "encoder"), default="lexicon",
                        help="lexicon: VADER + Twitch lexicon (default); encoder: MiniLM + trained head (ONNX)")
    args = parser.parse_args(argv)
    src, out = stdin or sys.stdin, stdout or sys.stdout
    if args.backend == "encoder":
        try:
            scorer = EncoderSentiment()
        except (ImportError, FileNotFoundError, ValueError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
    else:
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
        description=f"Forecast error and interval coverage (horizons 1..{HORIZON} of 30 s intervals) on chat logs.",
    )
    parser.add_argument("files", type=Path, nargs="+", metavar="file", help="chat log (format detected); several: one result each")
    parser.add_argument("--format", choices=FORMATS, default=None, help="skip detection")
    parser.add_argument("--model", type=Path, default=MODEL_PATH, help="forecaster ONNX file")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file instead of a table")
    args = parser.parse_args(argv)
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        model = ForecastModel(args.model)
    except (FileNotFoundError, ValueError) as exc:
        err.write(f"error: {exc}\n")
        return 2
    status = 0
    for path in args.files:
        status = max(status, _backtest_one(path, args.format, model, args.json, out, err))
    return status


def _backtest_one(path: Path, fmt: str | None, model: ForecastModel, as_json: bool, out: TextIO, err: TextIO) -> int:
    try:
        msgs = load_replay(path, fmt)
    except (ReplayFormatError, FileNotFoundError, ValueError) as exc:
        err.write(f"error: {exc}\n")
        return 2
    points = series_from_messages(msgs)
    result = backtest([p.inputs() for p in points], model)
    evals = result.series["sentiment"].evals
    if evals == 0:
        err.write(f"error: {path}: too short for a backtest ({len(points)} intervals of 30 s)\n")
        return 2
    if as_json:
        row = {"file": str(path), "messages": len(msgs), "intervals": result.intervals, "horizons_s": [30 * h for h in range(1, HORIZON + 1)],
               "interval_level": result.level, **{s: result.series[s].as_dict() for s in SERIES}}
        out.write(json.dumps(row) + "\n")
        return 0
    out.write(f"{path}: {len(msgs)} messages, {result.intervals} intervals of 30 s, {evals} forecasts scored per series "
              f"(horizons 30..{30 * HORIZON} s)\n")
    out.write(f"{'series':<11}{'lstm':>11}{'run.mean':>11}{'persist':>11}{'lstm/best':>11}{'coverage':>10}\n")
    for s in SERIES:
        r = result.series[s]
        out.write(f"{s:<11}{r.mse['lstm']:>11.5f}{r.mse['running_mean']:>11.5f}{r.mse['persistence']:>11.5f}"
                  f"{r.ratio_to_best():>11.3f}{r.coverage:>10.3f}\n")
    out.write(f"(MSE; coverage of the {result.level:.0%} prediction intervals)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(score_main())
