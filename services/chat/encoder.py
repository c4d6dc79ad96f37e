"""The encoder sentiment backend: all-MiniLM-L6-v2 + a trained head, one ONNX graph.

`models/sentiment_encoder.onnx` (trained by `training.chat.train_encoder`; card:
models/SENTIMENT_ENCODER.md) maps a message's tokens to P(negative, neutral, positive).
The compound is P(positive) - P(negative) and the label the most probable class. Emote
classes and emote counts (window features) still come from the lexicon scorer, so the
window features keep their meaning whichever backend scores polarity.

Needs the `tokenizers` package (the `encoder` extra; no torch) and runs on onnxruntime.
About 100 times slower than the lexicon default (see training/chat/DATA.md): a choice
for accuracy on quiet streams, not for floods. Scores are cached by text like the
default's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from services.chat.sentiment import ChatSentiment, Sentiment
from streamsight.inference import create_session

MODEL_DIR = Path(__file__).parent / "models"
MODEL_PATH = MODEL_DIR / "sentiment_encoder.onnx"
TOKENIZER_PATH = MODEL_DIR / "sentiment_encoder_tokenizer.json"
MAX_TOKENS = 64  # chat lines are short; longer ones are cut (copypasta walls)
LABELS = ("negative", "neutral", "positive")


def load_tokenizer(path: str | Path = TOKENIZER_PATH):
    """The model's WordPiece tokenizer (the `tokenizers` package), truncating and padding."""
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ImportError(
            "the encoder sentiment backend needs the 'tokenizers' package (pip install 'streamsight[encoder]'); "
            "or use the default lexicon backend"
        ) from exc
    if not Path(path).is_file():
        raise FileNotFoundError(f"sentiment encoder tokenizer not found: {path}")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


class EncoderSentiment:
    """Drop-in for ChatSentiment (score, classes, lexicon) with the encoder's polarity."""

    def __init__(
        self,
        model_path: str | Path = MODEL_PATH,
        tokenizer_path: str | Path = TOKENIZER_PATH,
        lexicon_scorer: ChatSentiment | None = None,
        intra_threads: int | None = 1,
        cache_size: int = 65536,
    ) -> None:
        self._tok = load_tokenizer(tokenizer_path)
        self.session = create_session(model_path, intra_threads)
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise ValueError(f"{model_path}: expected inputs input_ids, attention_mask; got {sorted(names)}")
        self.lexicon_scorer = lexicon_scorer or ChatSentiment()
        self.lexicon = self.lexicon_scorer.lexicon
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], Sentiment] = OrderedDict()
        self._cache_size = cache_size

    @cached_property
    def classes(self) -> tuple[str, ...]:
        return self.lexicon.classes

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 3] probabilities in LABELS order."""
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        enc = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def score(self, text: str, emotes: tuple[str, ...] = ()) -> Sentiment:
        key = (text, emotes)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        result = self.score_batch([text], [emotes])[0]
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def prime(self, messages: Sequence[tuple[str, tuple[str, ...]]], batch: int = 64) -> None:
        """Score the uncached (text, emotes) pairs in batches and cache them, so the
        per-message `score` calls that follow (the aggregator's) are cache hits."""
        todo = list(dict.fromkeys(m for m in messages if m not in self._cache))
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            for key, result in zip(part, self.score_batch([t for t, _ in part], [e for _, e in part])):
                self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def score_batch(self, texts: Sequence[str], emotes: Sequence[tuple[str, ...]] | None = None) -> list[Sentiment]:
        """Score many messages in one inference (much faster per message than one by one)."""
        marked = list(emotes) if emotes is not None else [()] * len(texts)
        probs = self.probabilities([t if t.strip() else "." for t in texts])
        out = []
        for text, em, p in zip(texts, marked, probs):
            lex = self.lexicon_scorer.score(text, em)
            compound = round(float(p[2] - p[0]), 4)
            out.append(Sentiment(compound, LABELS[int(np.argmax(p))], lex.emote_classes, lex.emotes))
        return out
