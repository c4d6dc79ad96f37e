"""The encoder sentiment backend: ONNX against its torch version, quality on a held-out replay,
the setting that selects it, and the CLI."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest

from services.chat.encoder import LABELS, MODEL_PATH, EncoderSentiment
from services.chat.settings import ChatSettings
from streamsight.config import ConfigError, load_settings

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                                reason="the encoder backend needs the 'tokenizers' package (encoder extra)")


@pytest.fixture(scope="module")
def encoder() -> EncoderSentiment:
    return EncoderSentiment()


def test_scores_and_keeps_the_lexicon_features(encoder):
    s = encoder.score("KEKW KEKW that was hilarious")
    assert -1 <= s.compound <= 1
    assert dict(s.emote_classes).get("laugh") == 2 and s.emotes == 2  # emote classes still from the lexicon
    batch = encoder.score_batch(["LUL", "NotLikeThis", "he has 3 bombs left"])
    assert [b.label for b in batch] == ["positive", "negative", "neutral"]
    assert batch[0].compound > 0.5 > -0.5 > batch[1].compound
    probs = encoder.probabilities(["hello there", ""])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-4)
    encoder.prime([("PogChamp", ()), ("PogChamp", ())])
    assert encoder.score("PogChamp").label == "positive"


@pytest.mark.slow
def test_exported_backend_agrees_with_torch(shared_data, monkeypatch):
    """The shipped (int8-quantised) graph against the float torch model it came from."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("all_minilm_l6_v2")
    from transformers import AutoModel

    from services.chat.replay import load_replay
    from training.chat.train_encoder import EncoderClassifier, encode, extract_minilm

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        src = extract_minilm(Path(tmp) / "m")
        enc = AutoModel.from_pretrained(str(src)).eval()
    head_np = np.load(MODEL_PATH.with_name("sentiment_encoder_head.npz"), allow_pickle=False)
    head = torch.nn.Linear(384, 3)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(head_np["weight"]))
        head.bias.copy_(torch.from_numpy(head_np["bias"]))
    model = EncoderClassifier(enc, head).eval()
    backend = EncoderSentiment(cache_size=0)
    texts = [m.text for m in load_replay(shared_data / "chat" / "nlss" / "rechat-158202424.json")[:200]]
    ids, mask = encode(backend._tok, texts)
    with torch.no_grad():
        want = model(ids, mask).numpy()
    got = backend.probabilities(texts)
    # The shipped graph is int8 (per-channel dynamic quantisation): close, not equal.
    diff, agree = float(np.abs(got - want).mean()), float((got.argmax(1) == want.argmax(1)).mean())
    assert diff < 0.04 and agree >= 0.93, (diff, agree)
    # The float export itself is exact: the same model through ONNX without quantisation.
    from training.chat.train_encoder import export

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp32.onnx"
        export(model, path, quantize=False)
        fp32 = EncoderSentiment(path, cache_size=0).probabilities(texts)
    np.testing.assert_allclose(fp32, want, atol=1e-4)


def test_held_out_macro_f1(shared_data, encoder):
    from services.chat.replay import load_replay
    from training.chat.eval_sentiment import labelled, macro_f1

    items = labelled(load_replay(shared_data / "chat" / "nlss" / "rechat-98355852.json"))
    encoder.prime([(t, e) for t, e, _ in items])
    assert macro_f1(lambda t, e: encoder.score(t, e).label, items) >= 0.70


def test_setting_selects_the_backend(monkeypatch):
    from services.chat.service import make_products

    monkeypatch.setenv("STREAMSIGHT_CHAT_SENTIMENT_BACKEND", "encoder")
    settings = load_settings(ChatSettings)
    assert settings.sentiment_backend == "encoder"
    products = make_products(settings)
    assert isinstance(products.new_aggregator(0.0).scorer, EncoderSentiment)
    assert products.lexicon_version.endswith("+encoder")
    monkeypatch.setenv("STREAMSIGHT_CHAT_SENTIMENT_BACKEND", "bert")
    with pytest.raises(ConfigError, match="SENTIMENT_BACKEND"):
        load_settings(ChatSettings)


def test_cli_score_with_the_encoder():
    from services.chat.cli import score_main

    out = io.StringIO()
    assert score_main(["--backend", "encoder"], stdin=io.StringIO("PogChamp PogChamp\nNotLikeThis\n"), stdout=out) == 0
    assert [json.loads(x)["label"] for x in out.getvalue().splitlines()] == ["positive", "negative"]
    assert set(LABELS) == {"negative", "neutral", "positive"}
