"""The fusion model: JSON round trip, agreement with scikit-learn, contributions, bad files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from services.fusion.model import FusionModel, ModelError, choose

MODELS = Path(__file__).resolve().parents[2] / "services" / "fusion" / "models"


def _data(seed: int = 0, n: int = 400):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1.0, 5.0, 0.1, 20.0] + [0.0, 10.0, -3.0, 100.0]
    logit = 1.5 * (X[:, 0]) + 0.3 * (X[:, 1] - 10) - 8 * (X[:, 2] + 3) + rng.normal(scale=0.5, size=n)
    return X, (logit > 0).astype(int)


def _sklearn_model(X, y):
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(X), y)
    model = FusionModel(["vision.a", "audio.b", "audio.c", "chat.d"], clf.coef_[0], float(clf.intercept_[0]), scaler.mean_, scaler.scale_, version="t@1")
    return model, scaler, clf


def test_predictions_match_scikit_learn_and_survive_json(tmp_path):
    X, y = _data()
    model, scaler, clf = _sklearn_model(X, y)
    X_test, _ = _data(seed=1, n=50)
    expected = clf.predict_proba(scaler.transform(X_test))[:, 1]
    path = tmp_path / "m.json"
    model.save(path)
    loaded = FusionModel.load(path)
    assert loaded.version == "t@1" and loaded.features == model.features
    np.testing.assert_allclose(loaded.predict_proba(X_test), expected, rtol=1e-9, atol=1e-12)
    for row, p in zip(X_test[:10], expected[:10]):
        pred = loaded.predict(dict(zip(loaded.features, row)))
        assert pred.probability == pytest.approx(p, abs=1e-12)
    assert "pickle" not in path.read_text()


def test_contributions_sum_to_the_logit_and_are_ordered():
    X, y = _data()
    model, _, _ = _sklearn_model(X, y)
    pred = model.predict(dict(zip(model.features, X[3])))
    assert pred.logit == pytest.approx(model.intercept + sum(c.weight for c in pred.contributions), abs=1e-12)
    weights = [abs(c.weight) for c in pred.contributions]
    assert weights == sorted(weights, reverse=True)
    assert {c.feature for c in pred.contributions} == set(model.features)
    assert pred.probability == pytest.approx(1 / (1 + np.exp(-pred.logit)))


def test_missing_features_are_imputed_with_the_mean_and_contribute_nothing():
    X, y = _data()
    model, _, _ = _sklearn_model(X, y)
    values = dict(zip(model.features, X[0]))
    del values["chat.d"]
    values["audio.c"] = float("nan")
    pred = model.predict(values)
    assert sorted(pred.imputed) == ["audio.c", "chat.d"]
    by_name = {c.feature: c for c in pred.contributions}
    assert by_name["chat.d"].weight == 0.0 and by_name["chat.d"].value == pytest.approx(model.mean[3])
    assert by_name["audio.c"].weight == 0.0


def test_bad_model_files_give_clear_errors(tmp_path):
    X, y = _data()
    model, _, _ = _sklearn_model(X, y)
    good = model.to_dict()
    cases = {
        "not json": "{",
        "wrong format": json.dumps({**good, "format": "sklearn-pickle"}),
        "short coefficients": json.dumps({**good, "coefficients": good["coefficients"][:2]}),
        "zero scale": json.dumps({**good, "scaler": {"mean": good["scaler"]["mean"], "scale": [0.0] * 4}}),
        "missing intercept": json.dumps({k: v for k, v in good.items() if k != "intercept"}),
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        with pytest.raises(ModelError, match=re.escape(str(path))):
            FusionModel.load(path)


def test_choose_prefers_the_model_that_needs_nothing_absent():
    full = FusionModel(["vision.a", "audio.b", "chat.c"], [1, 1, 1], 0.0, [0, 0, 0], [1, 1, 1], version="full")
    av = FusionModel(["vision.a", "audio.b"], [1, 1], 0.0, [0, 0], [1, 1], version="av")
    assert choose([full, av], {"vision", "audio", "chat"}).version == "full"
    assert choose([full, av], {"vision", "audio"}).version == "av"
    assert choose([full, av], {"vision"}).version == "full"  # nothing fits: the main model imputes


@pytest.mark.parametrize("name", ["default.json", "default_av.json"])
def test_shipped_models_load_and_match_their_card(name):
    path = MODELS / name
    model = FusionModel.load(path)
    assert model.modalities >= {"vision", "audio"}
    card = (MODELS / "MODEL.md").read_text()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"`{name}`" in card and digest in card, f"MODEL.md must list {name} with sha256 {digest}"
