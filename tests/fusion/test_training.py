"""Fusion training tools: label files, grouped splits, weak labels, the train-fusion CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.fusion.model import FusionModel
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2
from training.fusion import dataset, evaluate, records
from training.fusion.labels import Interval, LabelsError, read_labels, window_label
from training.fusion.train import train_fusion_main

MODALITY = {"vision": common_pb2.MODALITY_VISION, "audio": common_pb2.MODALITY_AUDIO, "chat": common_pb2.MODALITY_CHAT}


def make_run(n_streams: int, seed: int, windows: int = 12) -> tuple[list[features_pb2.FeatureRecord], list[tuple[str, float, float]]]:
    """Records of scripted streams: a highlight raises motion and loudness, and chat reacts in it."""
    rng = np.random.default_rng(seed)
    recs, labels = [], []
    for s in range(n_streams):
        sid = f"s{seed}-{s}"
        high = set(rng.choice(windows, size=3, replace=False).tolist())
        for w in range(windows):
            h = w in high
            if h:
                start = 10.0 * w + rng.uniform(0, 4)
                labels.append((sid, round(start, 2), round(start + 6, 2)))
            vals = {
                "vision": {"motion_prob_max": rng.normal(0.8 if h else 0.3, 0.2), "flow_mag_mean": rng.normal(5 if h else 2, 1.5), "flow_frames": 50.0},
                "audio": {"loudness_jump_lu": rng.normal(6 if h else 0, 3), "spectral_flatness": rng.uniform(0, 1)},
                "chat": {"chat_rate_z": rng.normal(3 if h else 0, 0.7), "chat_emote_laugh": float(rng.poisson(6 if h else 0.3)),
                         "chat_emote_hype": float(rng.poisson(4 if h else 0.3))},
            }
            for m, v in vals.items():
                recs.append(features_pb2.FeatureRecord(stream_id=sid, window=w, modality=MODALITY[m], start_s=10.0 * w, end_s=10.0 * w + 10, values=v))
    return recs, labels


def write_labels(path: Path, labels) -> Path:
    path.write_text("stream,start,end,label\n" + "".join(f"{s},{a},{b},highlight\n" for s, a, b in labels))
    return path


def test_label_files_csv_clip_json_and_label_studio(tmp_path):
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("stream,start,end,label\ns1,0:12,0:18,highlight\ns1,40,50,none\n")
    ivs = read_labels(csv_path)
    assert [(i.stream, i.start, i.end, i.positive) for i in ivs] == [("s1", 12.0, 18.0, True), ("s1", 40.0, 50.0, False)]
    clips = tmp_path / "clips.json"
    clips.write_text(json.dumps({"clips": [{"video": "/data/s2.mp4", "start_s": 5, "end_s": 9, "label": "highlight"}]}))
    assert [(i.stream, i.start, i.end) for i in read_labels(clips)] == [("s2", 5.0, 9.0)]
    studio = tmp_path / "ls.json"
    studio.write_text(json.dumps([{"data": {"video": "s3.mp4"}, "annotations": [{"result": [{"value": {"start": 31.5, "end": 36, "labels": ["highlight"]}}]}]}]))
    assert [(i.stream, i.start, i.end, i.positive) for i in read_labels(studio)] == [("s3", 31.5, 36.0, True)]
    bad = tmp_path / "bad.csv"
    bad.write_text("stream,start,end\ns1,20,10\n")
    with pytest.raises(LabelsError, match="bad.csv:2"):
        read_labels(bad)
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LabelsError, match="stream,start,end"):
        read_labels(tmp_path / "h.csv")


def test_window_labels_need_enough_overlap():
    ivs = [Interval("s", 18.0, 24.0), Interval("s", 59.0, 60.5)]
    assert [window_label(ivs, "s", 10.0 * w, 10.0 * w + 10) for w in range(7)] == [0, 0, 1, 0, 0, 1, 0]
    assert window_label(ivs, "other", 20, 30) == 0


def test_grouped_splits_never_put_one_stream_on_both_sides():
    recs, labels = make_run(6, seed=1)
    rows = records.to_rows(recs)
    ds = dataset.build(rows, dataset.interval_labeller(read_labels_from(labels)))
    assert "vision.flow_frames" not in ds.features  # bookkeeping, not content
    folds = evaluate.splits(ds, folds=3)
    assert len(folds) == 3
    for train, test in folds:
        assert not set(ds.groups[train]) & set(ds.groups[test])
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(ds)))


def read_labels_from(labels):
    return [Interval(s, a, b) for s, a, b in labels]


def test_weak_labels_follow_the_chat_reaction():
    recs, labels = make_run(1, seed=2)
    rows = records.to_rows(recs)
    truth = dataset.interval_labeller(read_labels_from(labels))
    weak0 = dataset.weak_labels(rows, rate_z=1.5, emotes=3, lag_windows=0)
    weak1 = dataset.weak_labels(rows, rate_z=1.5, emotes=3, lag_windows=1)
    keys = sorted(rows)
    y_true = [truth(s, w, rows[(s, w)]["start_s"], rows[(s, w)]["end_s"]) for s, w in keys]
    y0 = [weak0(s, w, 0, 0) for s, w in keys]
    y1 = [weak1(s, w, 0, 0) for s, w in keys]
    assert y0 == y_true  # the scripted chat reacts inside the highlight's window
    assert all(a <= b for a, b in zip(y0, y1)) and sum(y1) > sum(y0)  # a lag also marks the window before
    quiet = {k: {**v, "features": {n: x for n, x in v["features"].items() if not n.startswith("chat.")}} for k, v in rows.items()}
    assert not any(dataset.weak_labels(quiet)(s, w, 0, 0) for s, w in keys)  # no chat, no weak label


def test_train_fusion_cli_trains_evaluates_and_writes_a_model(tmp_path, capsys):
    train, train_labels = make_run(8, seed=3)
    test, test_labels = make_run(4, seed=4)
    records.write_jsonl(train, tmp_path / "train.jsonl")
    records.write_jsonl(test, tmp_path / "test.jsonl")
    out = tmp_path / "model.json"
    code = train_fusion_main([
        "--features", str(tmp_path / "train.jsonl"), "--labels", str(write_labels(tmp_path / "train.csv", train_labels)),
        "--test-features", str(tmp_path / "test.jsonl"), "--test-labels", str(write_labels(tmp_path / "test.csv", test_labels)),
        "--out", str(out), "--version", "t@1", "--report", str(tmp_path / "report.json"), "--folds", "4",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert "F1 0.44" in printed and "held out (4 streams)" in printed and "feature weights" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["held_out"]["f1"] >= 0.8 and report["held_out"]["pr_auc"] >= 0.8  # separable by design, never seen in training
    model = FusionModel.load(out)
    assert model.version == "t@1" and model.threshold == 0.5 and model.modalities == {"vision", "audio", "chat"}
    weights = dict(report["weights"])
    assert weights["chat.chat_rate_z"] > 0 and weights["vision.motion_prob_max"] > 0


def test_weak_mode_trains_audio_and_vision_only_and_scores_true_highlights(tmp_path, capsys):
    train, _ = make_run(8, seed=5)
    test, test_labels = make_run(4, seed=6)
    records.write_jsonl(train, tmp_path / "train.jsonl")
    records.write_jsonl(test, tmp_path / "test.jsonl")
    out = tmp_path / "weak.json"
    code = train_fusion_main(["--features", str(tmp_path / "train.jsonl"), "--weak", "--weak-lag-windows", "0", "--out", str(out),
                              "--test-features", str(tmp_path / "test.jsonl"), "--test-labels", str(write_labels(tmp_path / "t.csv", test_labels)),
                              "--report", str(tmp_path / "r.json")])
    assert code == 0
    assert FusionModel.load(out).modalities == {"vision", "audio"}
    assert json.loads((tmp_path / "r.json").read_text())["held_out"]["f1"] >= 0.6  # judged on hand labels


def test_cli_errors_are_clear(tmp_path, capsys):
    assert train_fusion_main(["--features", str(tmp_path / "missing.jsonl"), "--weak"]) == 2
    assert "cannot read feature dump" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"stream_id": "a", "window": "x"}\n')
    assert train_fusion_main(["--features", str(tmp_path / "bad.jsonl"), "--weak"]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert train_fusion_main(["--features", str(tmp_path / "bad.jsonl")]) == 2
    assert "exactly one of --labels or --weak" in capsys.readouterr().err
