"""Evaluate chat sentiment backends on held-out replays labelled by the project's rule.

Run: `python -m training.chat.eval_sentiment [--data ../shared/data/chat/nlss] [--out FILE]`

For every held-out replay (whole videos no backend was fitted or tuned on; see DATA.md)
the messages the rule in `weak_labels.py` labels are scored by each backend, and
macro-F1 over positive / neutral / negative is reported. Two protocols:

- `full`: the backend sees the whole message (what the service does);
- `masked`: the anchors that decided the label are removed from the message and only
  messages with at least two tokens left are kept (FeelsGoodMan's protocol: can the
  backend read the polarity from the rest of the text, not just from the anchor?).

Speed: messages per second on one thread over the held-out messages, the scorer's cache
off (every message scored afresh) and on (the service's default).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from sklearn.metrics import f1_score
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.chat.message import ChatMessage
from services.chat.replay import load_replay
from services.chat.sentiment import ChatSentiment, label_for
from training.chat.weak_labels import LABELS, NEGATIVE_EMOTES, NEGATIVE_WORDS, POSITIVE_EMOTES, POSITIVE_WORDS, _fold, weak_label

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chat" / "nlss"
TRAIN = ("84065913", "103227724", "115328018")
HELD_OUT = ("98355852", "158202424")  # The Culling, HITMAN: as in train_forecast.py
ENCODER_PATH = REPO / "services" / "chat" / "models" / "sentiment_encoder.onnx"

Scorer = Callable[[str, tuple[str, ...]], str]


def labelled(msgs: list[ChatMessage]) -> list[tuple[str, tuple[str, ...], str]]:
    """(text, marked emotes, label) for every message the rule labels."""
    return [(m.text, m.emotes, lab) for m in msgs if (lab := weak_label(m.text, m.emotes)) is not None]


def mask_anchors(text: str) -> str:
    """The message without the tokens that are anchors of the rule."""
    keep = []
    for tok in text.split():
        bare = tok.strip(".,!?") or tok
        if bare in POSITIVE_EMOTES or bare in NEGATIVE_EMOTES:
            continue
        word = _fold(tok)
        if word in POSITIVE_WORDS or word in NEGATIVE_WORDS:
            continue
        keep.append(tok)
    return " ".join(keep)


def masked(items: list[tuple[str, tuple[str, ...], str]]) -> list[tuple[str, tuple[str, ...], str]]:
    out = []
    for text, emotes, lab in items:
        rest = mask_anchors(text)
        if len(rest.split()) >= 2:
            out.append((rest, tuple(e for e in emotes if e in rest.split()), lab))
    return out


def macro_f1(scorer: Scorer, items) -> float:
    y = [lab for _, _, lab in items]
    p = [scorer(text, emotes) for text, emotes, _ in items]
    return float(f1_score(y, p, labels=list(LABELS), average="macro", zero_division=0))


def msgs_per_s(make: Callable[[], Scorer], texts: list[tuple[str, tuple[str, ...]]], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        scorer = make()  # a fresh scorer each time: no cache carried over between repeats
        t = time.perf_counter()
        for text, emotes in texts:
            scorer(text, emotes)
        best = min(best, time.perf_counter() - t)
    return len(texts) / best


def backends() -> dict[str, tuple[Callable[[], Scorer], Callable[[], Scorer] | None]]:
    """name -> (factory without cache, factory with the default cache or None)."""

    def vader() -> Scorer:
        v = SentimentIntensityAnalyzer()
        return lambda text, emotes: label_for(v.polarity_scores(text)["compound"])

    def lexicon(cache: int) -> Callable[[], Scorer]:
        def make() -> Scorer:
            s = ChatSentiment(cache_size=cache)
            return lambda text, emotes: s.score(text, emotes).label
        return make

    found = {"vader": (vader, None), "lexicon": (lexicon(0), lexicon(65536))}
    if ENCODER_PATH.is_file():
        from services.chat.encoder import EncoderSentiment  # noqa: PLC0415 - needs the encoder extra

        def encoder() -> Scorer:
            s = EncoderSentiment()

            def label(text: str, emotes: tuple[str, ...]) -> str:
                return s.score(text, emotes).label

            label.prime = s.prime  # type: ignore[attr-defined]  # batch-score up front: much faster
            return label

        found["encoder"] = (encoder, None)
    return found


def encoder_batch_rate(texts: list[tuple[str, tuple[str, ...]]], batch: int = 64) -> float:
    """The encoder's messages per second on one thread when scored in batches (as the service does)."""
    from services.chat.encoder import EncoderSentiment  # noqa: PLC0415

    s = EncoderSentiment(cache_size=0)
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        s.score_batch([x for x, _ in texts[i : i + batch]], [e for _, e in texts[i : i + batch]])
    return len(texts) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "training" / "chat" / "sentiment_metrics.json")
    args = parser.parse_args(argv)
    logs = {v: load_replay(args.data / f"rechat-{v}.json") for v in TRAIN + HELD_OUT}
    items = {v: labelled(logs[v]) for v in logs}
    report: dict = {"held_out": list(HELD_OUT), "train": list(TRAIN), "labels": {}, "backends": {}}
    for v, its in items.items():
        counts = {lab: sum(1 for *_, x in its if x == lab) for lab in LABELS}
        report["labels"][v] = {"messages": len(logs[v]), "labelled": len(its), **counts, "masked": len(masked(its))}
    held_items = [it for v in HELD_OUT for it in items[v]]
    texts = [(m.text, m.emotes) for v in HELD_OUT for m in logs[v]]
    for name, (make, make_cached) in backends().items():
        scorer = make()
        if hasattr(scorer, "prime"):
            scorer.prime([(t, e) for v in items for t, e, _ in items[v] + masked(items[v])])
        row: dict = {"full": {}, "masked": {}}
        for v in TRAIN + HELD_OUT:
            row["full"][v] = macro_f1(scorer, items[v])
            row["masked"][v] = macro_f1(scorer, masked(items[v]))
        row["full"]["held_out_pooled"] = macro_f1(scorer, held_items)
        row["masked"]["held_out_pooled"] = macro_f1(scorer, masked(held_items))
        if name == "encoder":  # one by one it is slow: time it in batches, on a sample
            row["msgs_per_s_no_cache"] = encoder_batch_rate(texts[:1000])
        else:
            row["msgs_per_s_no_cache"] = msgs_per_s(make, texts)
        if make_cached is not None:
            row["msgs_per_s_cached"] = msgs_per_s(make_cached, texts)
        report["backends"][name] = row
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    r = main()
    for name, row in r["backends"].items():
        full = " ".join(f"{v}={row['full'][v]:.3f}" for v in HELD_OUT)
        msk = " ".join(f"{v}={row['masked'][v]:.3f}" for v in HELD_OUT)
        print(f"{name:<10} full {full} pooled={row['full']['held_out_pooled']:.3f} | masked {msk} | "
              f"{row['msgs_per_s_no_cache']:,.0f} msg/s (no cache) {row.get('msgs_per_s_cached', 0):,.0f} (cache)")
    print(json.dumps(r["labels"]))
