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
from services.chat.forecast import HORIZON, MIN_EVALS, MODEL_PATH, N_FEATURES, SERIES, ForecastModel, backtest

REPO = MODEL_PATH.parents[3]


def _export(tmp_path, monkeypatch, hidden=8, seed=0, interval_k=None):
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(REPO))  # training/ is not an installed package
    from training.chat.train_forecast import Forecaster, export

    torch.manual_seed(seed)
    model = Forecaster(hidden=hidden)
    path = tmp_path / "f.onnx"
    export(model, path, interval_k)
    return torch, model, path


def test_onnx_export_matches_torch(tmp_path, monkeypatch):
    torch, model, path = _export(tmp_path, monkeypatch)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.3)  # the head starts at zero; give it something to carry
    from training.chat.train_forecast import export

    export(model, path)
    onnx_model = ForecastModel(path)
    x = torch.randn(1, 23, N_FEATURES)
    h0 = torch.zeros(1, 1, 8)
    with torch.no_grad():
        want, hn, cn = model(x, h0, h0.clone())
    got, (h, c) = onnx_model.run(x.numpy(), onnx_model.initial_state())
    assert got.shape == (23, 2 * HORIZON)
    np.testing.assert_allclose(got, want[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(h, hn.numpy(), atol=1e-5)
    # One step at a time with the carried state gives the same as the whole sequence.
    state = onnx_model.initial_state()
    steps = []
    for t in range(23):
        dev, state = onnx_model.run(x[:, t : t + 1].numpy(), state)
        steps.append(dev[0])
    np.testing.assert_allclose(np.stack(steps), want[0].numpy(), atol=1e-5)


def test_shipped_model_card_sha256_and_calibration():
    card = (MODEL_PATH.parent / "MODEL.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()
    assert re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", card).group(1) == digest
    model = ForecastModel()
    assert model.level == 0.8 and all(len(model.k[s]) == HORIZON and min(model.k[s]) > 0 for s in SERIES)


def test_baselines_on_a_hand_made_series(tmp_path, monkeypatch):
    """Running mean and persistence MSE, worked out by hand; a zero head is the running mean."""
    _, _, path = _export(tmp_path, monkeypatch)
    values = [0.1, 0.3, 0.2, 0.6, 0.0]
    counts = [30, 60, 30, 90, 0]  # 1, 2, 1, 3, 0 messages/s
    r = backtest(list(zip(values, counts)), ForecastModel(path), warmup=2)
    # Scored: t=2 (h=1 -> 0.6, h=2 -> 0.0), t=3 (h=1 -> 0.0). Running means at t=2: 0.2, t=3: 0.3.
    rm = ((0.2 - 0.6) ** 2 + (0.2 - 0.0) ** 2 + (0.3 - 0.0) ** 2) / 3
    pers = ((0.2 - 0.6) ** 2 + (0.2 - 0.0) ** 2 + (0.6 - 0.0) ** 2) / 3
    sent = r.series["sentiment"]
    assert sent.evals == 3
    assert sent.mse["running_mean"] == pytest.approx(rm) and sent.mse["persistence"] == pytest.approx(pers)
    assert sent.mse["lstm"] == pytest.approx(rm, abs=1e-6)  # zero head: the running mean (float32 model)
    act = r.series["activity"]  # running means of the rate at t=2: 4/3, t=3: 7/4
    rm_a = ((4 / 3 - 3) ** 2 + (4 / 3 - 0) ** 2 + (7 / 4 - 0) ** 2) / 3
    pers_a = ((1 - 3) ** 2 + (1 - 0) ** 2 + (3 - 0) ** 2) / 3
    assert act.mse["running_mean"] == pytest.approx(rm_a) and act.mse["persistence"] == pytest.approx(pers_a)
    assert act.ratio_to_best() == pytest.approx(1.0)


def test_backtest_per_horizon_adds_up(tmp_path, monkeypatch):
    """Each horizon's own MSE and coverage; their evaluation-weighted mean is the total."""
    _, _, path = _export(tmp_path, monkeypatch)
    values = [0.1, 0.3, 0.2, 0.6, 0.0, 0.4]
    counts = [30, 60, 30, 90, 0, 60]
    r = backtest([(v, c, 0.0, (c // 3, c // 3, c - 2 * (c // 3))) for v, c in zip(values, counts)], ForecastModel(path), warmup=2)
    sent = r.series["sentiment"]
    assert [h.evals for h in sent.per_horizon] == [3, 2, 1]
    # persistence at h=3: only t=2 -> outcome at t=5: (0.2 - 0.4)^2
    assert sent.per_horizon[2].mse["persistence"] == pytest.approx((0.2 - 0.4) ** 2)
    for s in SERIES:
        total = r.series[s]
        for m in ("lstm", "running_mean", "persistence"):
            assert sum(h.mse[m] * h.evals for h in total.per_horizon) / total.evals == pytest.approx(total.mse[m])
        assert sum(h.coverage * h.evals for h in total.per_horizon) / total.evals == pytest.approx(total.coverage)
    assert [h["evals"] for h in sent.as_dict()["per_horizon"]] == [3, 2, 1]


def test_interval_scale_shrinks_towards_the_training_spread():
    """With weight w the stream's variance counts as if w intervals of the prior spread had
    been seen; weight 0 is the stream's own std; the Poisson floor still holds."""
    from services.chat.forecast import SeriesState

    own = SeriesState(30.0)
    shrunk = SeriesState(30.0, scale_prior=(0.2, 0.5), scale_prior_weight=(4.0, 4.0))
    for v, n in [(0.10, 300), (0.12, 330), (0.11, 270)]:  # rate 10, 11, 9 messages/s
        own.update(v, n)
        shrunk.update(v, n)
    assert own.scale(0) == pytest.approx(max(0.01, 0.02))  # std 0.01, floored
    want = ((2 * 0.01**2 + 4 * 0.2**2) / 6) ** 0.5
    assert shrunk.scale(0) == pytest.approx(want)
    assert own.scale(1) == pytest.approx(1.0)  # std of 10, 11, 9
    assert shrunk.scale(1) == pytest.approx(((2 * 1.0 + 4 * (0.5 * 10) ** 2) / 6) ** 0.5)
    quiet = SeriesState(30.0, scale_prior=(0.0, 0.0), scale_prior_weight=(0.0, 9.0))
    quiet.update(0.0, 30)
    assert quiet.scale(1) == pytest.approx((1.0 / 30) ** 0.5)  # Poisson floor of 1 message/s


def test_tail_features_see_a_burst_at_the_end_of_an_interval():
    """The last two features before 1/n are the rate of the interval's last and
    second-to-last third relative to the running mean; without parts, the whole interval's."""
    from services.chat.forecast import SeriesState

    even, late = SeriesState(30.0), SeriesState(30.0)
    even.update(0.0, 90, 0.0, (30, 30, 30))
    late.update(0.0, 90, 0.0, (30, 30, 30))
    f_even = even.update(0.0, 90, 0.0, (30, 30, 30))
    f_late = late.update(0.0, 90, 0.0, (0, 0, 90))  # 9 messages/s in its last 10 s, running mean 3
    assert f_even[-3:] == [0.0, 0.0, 0.5]
    assert f_late[-3:] == [pytest.approx(2.0), -1.0, 0.5]
    assert f_late[:-3] == f_even[:-3]  # nothing else tells them apart
    assert SeriesState(30.0).update(0.0, 90)[-3:-1] == [0.0, 0.0]  # no parts: even


def test_intervals_cover_a_synthetic_series_at_the_nominal_rate(tmp_path, monkeypatch):
    """Stationary Gaussian sentiment and Poisson activity: with k = the normal quantile, the
    stream-scaled intervals cover about `level` of the outcomes at every horizon."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.9)  # 80 % two-sided
    _, _, path = _export(tmp_path, monkeypatch, interval_k={s: [z] * HORIZON for s in SERIES})
    model = ForecastModel(path)
    rng = np.random.default_rng(7)
    n = 3000
    values = np.clip(rng.normal(0.1, 0.1, n), -1, 1)
    counts = rng.poisson(90, n)  # 3 messages/s
    r = backtest(list(zip(values, counts)), model, warmup=10)
    for s in SERIES:
        assert abs(r.series[s].coverage - 0.8) < 0.03, (s, r.series[s].coverage)
    # Too narrow intervals miss: the coverage measure can fail.
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    _, _, p2 = _export(narrow, monkeypatch, interval_k={s: [0.3] * HORIZON for s in SERIES})
    assert backtest(list(zip(values, counts)), ForecastModel(p2), warmup=10).series["sentiment"].coverage < 0.4


def test_stream_forecaster_shapes_and_trust_rule():
    model = ForecastModel()
    stream = model.stream()
    rng = np.random.default_rng(0)
    forecasts = [stream.update(float(v), int(c), 0.2) for v, c in zip(rng.normal(0.1, 0.08, 40), rng.poisson(40, 40))]
    f = forecasts[-1]
    for s in (f.sentiment, f.activity):
        assert len(s.lstm) == len(s.running_mean) == len(s.persistence) == len(s.lower) == len(s.upper) == HORIZON
        assert all(lo <= v <= hi for lo, v, hi in zip(s.lower, s.lstm, s.upper))
    assert all(-1 <= v <= 1 for v in f.sentiment.lstm) and all(v >= 0 for v in f.activity.lower)
    assert not any(x.sentiment.trustworthy for x in forecasts[:4])  # too few evaluations yet
    for x in forecasts:
        for s in (x.sentiment, x.activity):
            if s.trustworthy:
                assert s.evals >= MIN_EVALS and s.lstm_mse < s.baseline_mse
            elif s.evals >= MIN_EVALS:
                assert s.lstm_mse >= s.baseline_mse
    with pytest.raises(ValueError, match="finite"):
        stream.update(float("nan"), 1)
    with pytest.raises(ValueError, match=">= 0"):
        stream.update(0.1, -1)


@pytest.mark.parametrize("video", ["98355852", "158202424"])
def test_forecast_quality_on_held_out_video(shared_data, video):
    """Held-out videos (never trained on): the intervals cover within 5 points of nominal
    (the issue's goal), sentiment beats the better baseline by 5 % (its goal), activity
    stays within 5 % of it (its goal of 0.8 is not met: MODEL.md) and beats persistence."""
    from services.chat.replay import load_replay
    from services.chat.windows import series_from_messages

    msgs = load_replay(shared_data / "chat" / "nlss" / f"rechat-{video}.json")
    pts = series_from_messages(msgs)
    r = backtest([p.inputs() for p in pts], ForecastModel())
    for s in SERIES:
        res = r.series[s]
        assert res.evals > 50
        assert abs(res.coverage - r.level) <= 0.05, (s, res.coverage)
        assert res.ratio_to_best() < (0.95 if s == "sentiment" else 1.05), (s, res.mse)
        assert res.mse["lstm"] < res.mse["persistence"], (s, res.mse)


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
    assert res["horizons_s"] == [30, 60, 90] and res["interval_level"] == 0.8
    for s in ("sentiment", "activity"):
        assert set(res[s]["mse"]) == {"lstm", "running_mean", "persistence"} and res[s]["evals"] > 40
        assert 0 <= res[s]["coverage"] <= 1
        best = min(res[s]["mse"]["running_mean"], res[s]["mse"]["persistence"])
        assert res[s]["ratio_to_best_baseline"] == pytest.approx(res[s]["mse"]["lstm"] / best)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"time": 1, "user": "u", "message": "x"}\n{"oops"\n')
    assert backtest_main([str(bad)], stdout=out, stderr=err) == 2
    assert f"{bad}:2:" in err.getvalue()
    table = io.StringIO()
    assert backtest_main([str(path), str(path)], stdout=table, stderr=err) == 0
    assert table.getvalue().count("activity") == 2 and "coverage" in table.getvalue()
