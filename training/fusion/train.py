"""`streamsight train-fusion`: train and evaluate the fusion model from a stored run.

    python -m training.fusion.train --features run.jsonl --labels labels.csv --out model.json
    python -m training.fusion.train --nats nats://127.0.0.1:4222 --stream s1 --weak --out av.json
    python -m training.fusion.train --nats nats://127.0.0.1:4222 --dump run.jsonl   (save a run, no training)
    ... --test-features held_out.jsonl --test-labels held_out.csv   (held-out evaluation)

Features: JSONL dumps of FeatureRecords (`--features`, repeatable) or the FEATURES stream of a
running NATS (`--nats`, optionally `--stream`). Labels: interval CSV / clip JSON (`--labels`,
see labels.py) or `--weak` (the chat's reaction; the model then uses audio and vision only).
Prints grouped cross-validation (GroupKFold by stream) and, with a test set, held-out metrics,
each beside the published baseline F1 0.44, then the features' weights. The decision threshold
is the one with the best F1 on the out-of-fold predictions; it is folded into the intercept, so
the stored model decides at probability 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from training.fusion import dataset as ds_mod
from training.fusion import evaluate as ev
from training.fusion.labels import LabelsError, read_labels
from training.fusion.records import RecordsError, read_features_stream, read_jsonl, to_rows, write_jsonl


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamsight train-fusion", description="Train and evaluate the fusion meta-model.")
    src = p.add_argument_group("features")
    src.add_argument("--features", action="append", default=[], type=Path, help="JSONL dump of FeatureRecords (repeatable)")
    src.add_argument("--nats", help="read the FEATURES stream of this NATS server instead")
    src.add_argument("--stream", default="*", help="with --nats: only this stream id")
    src.add_argument("--dump", type=Path, help="write the records read to this JSONL file (alone: only that)")
    lab = p.add_argument_group("labels")
    lab.add_argument("--labels", type=Path, help="interval CSV (stream,start,end,label) or clip JSON")
    lab.add_argument("--weak", action="store_true", help="labels from the chat's reaction; trains on audio+vision")
    lab.add_argument("--weak-rate-z", type=float, default=1.5)
    lab.add_argument("--weak-emotes", type=float, default=3.0)
    lab.add_argument("--weak-lag-windows", type=int, default=1)
    p.add_argument("--modalities", help="comma list of modalities to use (default: all present; --weak: vision,audio)")
    p.add_argument("--test-features", action="append", default=[], type=Path, help="held-out JSONL dump (repeatable)")
    p.add_argument("--test-labels", type=Path, help="labels of the held-out streams")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    p.add_argument("--min-overlap", type=float, default=3.0, help="seconds of a highlight that make its window positive")
    p.add_argument("--out", type=Path, help="write the model JSON here")
    p.add_argument("--version", default="fusion@custom", help="version string stored in the model")
    p.add_argument("--report", type=Path, help="write the evaluation as JSON here")
    return p


def _load_rows(paths: list[Path], nats_url: str | None, stream: str, dump: Path | None = None) -> dict:
    records = []
    for path in paths:
        records += read_jsonl(path)
    if nats_url:
        records += asyncio.run(read_features_stream(nats_url, stream))
    if not records:
        raise ValueError("no feature records found")
    if dump is not None:
        write_jsonl(records, dump)
        print(f"{len(records)} feature records written to {dump}")
    return to_rows(records)


def run(args: argparse.Namespace) -> dict:
    """The whole job; returns the report (also printed)."""
    if not args.features and not args.nats:
        raise ValueError("give --features FILE or --nats URL")
    if args.dump and not args.labels and not args.weak:
        rows = _load_rows(args.features, args.nats, args.stream, args.dump)
        return {"dumped": str(args.dump), "windows": len(rows)}
    if bool(args.labels) == bool(args.weak):
        raise ValueError("give exactly one of --labels or --weak")
    rows = _load_rows(args.features, args.nats, args.stream, args.dump)
    modalities = args.modalities.split(",") if args.modalities else (["vision", "audio"] if args.weak else None)
    intervals = read_labels(args.labels) if args.labels else []
    if args.weak:
        labeller = ds_mod.weak_labels(rows, args.weak_rate_z, args.weak_emotes, args.weak_lag_windows)
    else:
        labeller = ds_mod.interval_labeller(intervals, args.min_overlap)
    train = ds_mod.build(rows, labeller, modalities=modalities)
    oof = ev.out_of_fold(train, args.folds, args.C)
    threshold = ev.best_threshold(train.y, oof)
    cv = ev.metrics(train.y, oof, threshold)
    report: dict = {
        "labels": "weak (chat reaction)" if args.weak else args.labels.name,
        "streams": len(set(train.groups.tolist())),
        "features": train.features,
        "baseline_f1": ev.BASELINE_F1,
        "cross_validation": cv.as_dict(),
    }
    print(f"{ev.BASELINE_NOTE}: F1 {ev.BASELINE_F1:.2f}")
    print(ev.format_report(f"grouped CV ({report['streams']} streams)", cv, ev.event_metrics(train, oof, intervals, threshold) if intervals else None))
    model = ev.fit(train, args.C, args.version, metadata={"labels": report["labels"], "streams": report["streams"], "windows": len(train)})
    model = ev.with_threshold(model, threshold)
    threshold = model.threshold
    if args.test_features:
        test_rows = _load_rows(args.test_features, None, "*")
        test_intervals = read_labels(args.test_labels) if args.test_labels else []
        if test_intervals:
            test_labeller = ds_mod.interval_labeller(test_intervals, args.min_overlap)
        else:
            test_labeller = ds_mod.weak_labels(test_rows, args.weak_rate_z, args.weak_emotes, args.weak_lag_windows)
        test = ds_mod.build(test_rows, test_labeller, features=train.features)
        p = model.predict_proba(test.X)
        held = ev.metrics(test.y, p, threshold)
        events = ev.event_metrics(test, p, test_intervals, threshold) if test_intervals else None
        report["held_out"] = {**held.as_dict(), "streams": len(set(test.groups.tolist())), "highlights": events}
        print(ev.format_report(f"held out ({report['held_out']['streams']} streams)", held, events))
    report["weights"] = [[name, round(w, 4)] for name, w in ev.weights(model)]
    print("feature weights (standardised coefficients):")
    for name, w in ev.weights(model, 12):
        print(f"  {w:+.3f}  {name}")
    if args.out:
        model.metadata["evaluation"] = {k: report[k] for k in ("cross_validation", "held_out") if k in report}
        model.save(args.out)
        print(f"model written to {args.out}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def train_fusion_main(argv: list[str] | None = None) -> int:
    """Entry point for `streamsight train-fusion`; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, LabelsError, RecordsError, OSError) as exc:
        print(f"train-fusion: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(train_fusion_main())
