"""Forecaster (ONNX vs torch, state carry, trust rule, card) and the chat CLI tools."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from services.chat.cli import backtest_main, score_main
from services.chat.forecast import HORIZON, MIN_EVALS, MODEL_PATH, N_FEATURES, ForecastModel, backtest

REPO = MODEL_PATH.parents[3]


def test_onnx_export_matches_torch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(REPO))  # training/ is not an installed package
    from training.chat.train_forecast import Forecaster, export

    torch.manual_seed(0)
    model = Forecaster(hidden=8)
    path = tmp_path / "f.onnx"
    export(model, path)
    onnx_model = ForecastModel(path)
    x = torch.randn(1, 23, N_FEATURES)
    h0 = torch.zeros(1, 1, 8)
    with torch.no_grad():
        want, hn, cn = model(x, h0, h0.clone())
    got, (h, c) = onnx_model.run(x.numpy(), onnx_model.initial_state())
    np.testing.assert_allclose(got, want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(h, hn.numpy(), atol=1e-5)
    # One step at a time with the carried state gives the same as the whole sequence.
    state = onnx_model.initial_state()
    steps = []
    for t in range(23):
        dev, state = onnx_model.run(x[:, t : t + 1].numpy(), state)
        steps.append(dev[0])
    np.testing.assert_allclose(np.stack(steps), want[0].numpy(), atol=1e-5)


def test_shipped_model_card_sha256():
    card = (MODEL_PATH.parent / "MODEL.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", card).group(1) == digest


def test_stream_forecaster_shapes_and_trust_rule():
    model = ForecastModel()
    stream = model.stream()
    rng = np.random.default_rng(0)
    forecasts = [stream.update(float(v), 40) for v in rng.normal(0.1, 0.08, 40)]
    f = forecasts[-1]
    assert len(f.lstm) == len(f.running_mean) == len(f.persistence) == HORIZON
    assert all(-1 <= v <= 1 for v in f.lstm)
    assert not any(x.trustworthy for x in forecasts[: MIN_EVALS // HORIZON + 1])  # too few evaluations yet
    for x in forecasts:
        if x.trustworthy:
            assert x.evals >= MIN_EVALS and x.lstm_mse < x.baseline_mse
        elif x.evals >= MIN_EVALS:
            assert x.lstm_mse >= x.baseline_mse
    with pytest.raises(ValueError, match="finite"):
        stream.update(float("nan"), 1)


def test_forecast_quality_on_held_out_video(shared_data):
    """Held-out video (never trained on): the LSTM is no worse than 15 % above the running
    mean (the card reports the exact ratio) and clearly better than persistence."""
    from services.chat.replay import load_replay
    from services.chat.windows import series_from_messages

    msgs = load_replay(shared_data / "chat" / "nlss" / "rechat-98355852.json")
    pts = series_from_messages(msgs)
    r = backtest([(p.mean_compound, p.messages) for p in pts], ForecastModel())
    assert r.evals > 100
    ratios = r.ratios()
    assert ratios["lstm"] < 1.15 and ratios["lstm"] < ratios["persistence"]


def test_cli_score_on_stdin():
    out = io.StringIO()
    assert score_main([], stdin=io.StringIO("KEKW\n\nSadge\nthis is great\n"), stdout=out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["text"] for r in rows] == ["KEKW", "Sadge", "this is great"]
    assert [r["label"] for r in rows] == ["positive", "negative", "positive"]
    assert all(set(r) == {"text", "compound", "label"} for r in rows)


def test_cli_score_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "services.chat.cli"], input="PogChamp PogChamp\nL\n",
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["label"] for x in proc.stdout.splitlines()] == ["positive", "negative"]


def test_cli_backtest(shared_data, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    path = shared_data / "chat" / "nlss" / "rechat-158202424.json"
    assert backtest_main([str(path), "--json"], stdout=out, stderr=err) == 0
    res = json.loads(out.getvalue())
    assert res["ratio_to_running_mean"]["running_mean"] == 1.0 and res["evals"] > 50
    assert set(res["mse"]) == {"lstm", "running_mean", "persistence"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time": 1, "user": "u", "message": "x"}\n{"oops"\n')
    assert backtest_main([str(bad)], stdout=out, stderr=err) == 2
    assert f"{bad}:2:" in err.getvalue()
