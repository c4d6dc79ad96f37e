"""Train the glitch classifier on the generated tiles (and real game tiles) and export it to ONNX.

`python -m training.glitch.train [--arch tiny|lite0] [--steps N] [--synthetic-only]` trains with fixed seeds
(torch.set_num_threads(2), deterministic sampling), reports tile-level metrics on the val
scenes, and for the shipped arch writes services/glitch/models/glitch_cnn.onnx plus
glitch_cnn.metrics.json. Classes are balanced by sampling; augmentation is horizontal and
vertical flips (stripes slant both ways; bands can sit anywhere).

By default (model 8: MODEL.md) the real game tiles of training.glitch.game (var/glitch/game.npz:
clean tiles, hard clean tiles and wrong-stride reads of recorded OpenArena takes) join the
generated training tiles. Stripes are drawn uniformly over generated and game tiles (model 7's
way); clean draws come from three pools in fixed shares (CLEAN_POOLS): generated clean tiles keep
most of them, because model 7, which drew game clean tiles like the rest (40 % of the clean
draws), called more generated clean tiles macroblocking. `--synthetic-only` trains on the
generated tiles alone, model 5's recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.glitch import dataset
from training.glitch import game as game_mod
from training.glitch.model import WithSoftmax, build

MODELS = Path(__file__).resolve().parents[2] / "services" / "glitch" / "models"
ONNX_PATH = MODELS / "glitch_cnn.onnx"
SEED = 0
# Where a clean draw comes from: generated tiles, random game tiles, hard game tiles (model 8).
CLEAN_POOLS = {"generated": 0.6, "game": 0.25, "game_hard": 0.15}


def _load(name: str, *fields: str) -> tuple[np.ndarray, ...]:
    path = dataset.OUT / f"{name}.npz"
    if not path.exists():
        hint = "python -m training.glitch.dataset (with the training takes of training/glitch/game.py), or train with --synthetic-only"
        raise SystemExit(f"{path} is missing: build it with `{hint if name == 'game' else 'python -m training.glitch.dataset'}`")
    with np.load(path, allow_pickle=False) as z:
        return tuple(z[f] for f in ("tiles", "labels", *fields))


def _batch(tiles: np.ndarray, idx: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
    x = tiles[idx]
    if rng is not None:
        flip_h = rng.random(len(idx)) < 0.5
        flip_v = rng.random(len(idx)) < 0.3
        x = x.copy()
        x[flip_h] = x[flip_h, :, ::-1]
        x[flip_v] = x[flip_v, ::-1]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()


@torch.no_grad()
def predict(model: torch.nn.Module, tiles: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(_batch(tiles, np.arange(i, min(len(tiles), i + batch)), None)), 1).numpy() for i in range(0, len(tiles), batch)]
    return np.concatenate(out)


def metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    pred = probs.argmax(1)
    bad_true, bad_pred = labels > 0, (1 - probs[:, 0]) >= 0.5
    tp = int((bad_true & bad_pred).sum())
    confusion = np.zeros((5, 5), int)
    for t, p in zip(labels, pred):
        confusion[t, p] += 1
    return {
        "tiles": int(len(labels)),
        "accuracy_5way": round(float((pred == labels).mean()), 4),
        "binary_precision": round(tp / max(1, int(bad_pred.sum())), 4),
        "binary_recall": round(tp / max(1, int(bad_true.sum())), 4),
        "recall_per_kind": {k: round(float((pred[labels == i] == i).mean()), 4) for i, k in enumerate(dataset.KINDS) if (labels == i).any()},
        "confusion": confusion.tolist(),
    }


def train(arch: str, steps: int, batch: int, lr: float, game: bool = True) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    tiles, labels = _load("train")
    game_counts = None
    by_class = [np.flatnonzero(labels == k) for k in range(5)]
    clean_pools = [by_class[0]]
    if game:
        game_tiles, game_labels, game_hard = _load("game", "hard")
        game_counts = {k: int((game_labels == i).sum()) for i, k in enumerate(dataset.KINDS)} | {"hard_clean": int(game_hard.sum())}
        offset = len(labels)
        tiles, labels = np.concatenate([tiles, game_tiles]), np.concatenate([labels, game_labels])
        del game_tiles
        by_class = [np.flatnonzero(labels == k) for k in range(5)]
        clean_pools = [np.flatnonzero(labels[:offset] == 0), offset + np.flatnonzero((game_labels == 0) & ~game_hard),
                       offset + np.flatnonzero((game_labels == 0) & game_hard)]
    pool_share = np.asarray(list(CLEAN_POOLS.values())) if game else np.asarray([1.0])
    val_tiles, val_labels = _load("val")
    model = build(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    started = time.time()
    for step in range(steps):
        model.train()
        # A third clean (false alarms cost more than a missed tile); stripes and macroblocking
        # more often than green and grey: they vary most (a width or height 1..96 px off; smears
        # that look like heavy but normal compression), and bands.py backs up green and grey.
        cls = rng.choice(5, size=batch, p=[0.0, 0.35, 0.3, 0.175, 0.175])
        cls[: batch // 3] = 0
        idx = np.array([rng.choice(_clean_pool(clean_pools, pool_share, rng) if c == 0 else by_class[c]) for c in cls])
        loss = F.cross_entropy(model(_batch(tiles, idx, rng)), torch.from_numpy(labels[idx]), label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{arch} step {step} loss {loss.item():.3f} {time.time() - started:.0f}s", file=sys.stderr)  # noqa: T201
    train_s = time.time() - started
    result = metrics(predict(model, val_tiles), val_labels)
    result.update(arch=arch, steps=steps, batch=batch, lr=lr, train_seconds=round(train_s, 1), threads=torch.get_num_threads(),
                  train_tiles=int(len(labels)), train_counts={k: int(len(v)) for k, v in zip(dataset.KINDS, by_class)},
                  game_counts=game_counts, clean_pools=CLEAN_POOLS if game else None,
                  game_takes_sha256=sorted(game_mod.TRAINING_TAKES.values()) if game else None)
    return model.eval(), result


def _clean_pool(pools: list[np.ndarray], share: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The pool a clean draw comes from (generated tiles alone: no draw, model 5's sequence stays)."""
    return pools[0] if len(pools) == 1 else pools[rng.choice(len(pools), p=share)]


def export(model: torch.nn.Module, path: Path = ONNX_PATH) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(WithSoftmax(model).eval(), (torch.rand(2, 3, 224, 224) * 255,), str(path), input_names=["rgb"], output_names=["probs"],
                      dynamic_axes={"rgb": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17, dynamo=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny", choices=["tiny", "lite0"])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=MODELS, help="where the ONNX file and metrics go (a candidate model: not the shipped folder)")
    parser.add_argument("--synthetic-only", action="store_true", help="generated tiles only (model 5's data), without var/glitch/game.npz")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a crowded machine: no thread waits for a descheduled one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lr = args.lr or (3e-3 if args.arch == "tiny" else 1e-3)
    model, result = train(args.arch, args.steps, args.batch, lr, game=not args.synthetic_only)
    out = args.out_dir / f"glitch_cnn.{args.arch}.metrics.json"
    if not args.no_export:
        result["sha256"] = export(model, args.out_dir / ONNX_PATH.name)
        out = args.out_dir / "glitch_cnn.metrics.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=1), file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()
