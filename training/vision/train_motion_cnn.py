"""Train the motion CNN (HSV flow image -> P(high motion)) and export motion_cnn.onnx.

Data (flow from the shipped flow.onnx, rendered by services.vision.flowviz):
- train: generated scenes (textures: vtest frames before VTEST_HELD_OUT_FROM and procedural),
  vtest before that frame at 5 fps (calm) and sampled 1 s apart (action);
- held out: generated scenes with other seeds and textures (later vtest frames, Big Buck
  Bunny frames), vtest from VTEST_HELD_OUT_FROM on (calm and 1 s apart), and all of Big Buck
  Bunny (labelled by watching; see training.vision.footage).

`python -m training.vision.train_motion_cnn` (about 2-3 minutes on 2 CPU threads).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.vision.flowviz import IMAGE_SIZE, flows_to_hsv_batch
from streamsight.inference import create_session
from training.vision import footage, scenes

SEED = 7
MODELS = Path(__file__).resolve().parents[2] / "services" / "vision" / "models"
OUT = MODELS / "motion_cnn.onnx"
METRICS = MODELS / "motion_cnn.metrics.json"


class MotionCNN(nn.Module):
    """Four strided conv blocks, global average pool, one logit."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, 12, 24, 32, 32]
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class Exported(nn.Module):
    def __init__(self, net: MotionCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


def compute_flows(pairs: list[tuple[np.ndarray, np.ndarray]], batch: int = 16) -> list[np.ndarray]:
    session = create_session(MODELS / "flow.onnx", intra_threads=2)  # same graph the service runs
    out: list[np.ndarray] = []
    for i in range(0, len(pairs), batch):
        a = np.stack([p[0] for p in pairs[i : i + batch]])[:, None].astype(np.float32)
        b = np.stack([p[1] for p in pairs[i : i + batch]])[:, None].astype(np.float32)
        out.extend(session.run(None, {"frame1": a, "frame2": b})[0])
    return out


def augmented(flows: list[np.ndarray], labels: np.ndarray, copies: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Each flow field plus `copies` variants: vectors rotated by a random angle, mirrored
    left-right half of the time, magnitude scaled by 0.85-1.15. The class (how much motion)
    does not depend on direction, and the variants keep the CNN from learning directions."""
    out = list(flows)
    for _ in range(copies):
        for f in flows:
            g = f[:, :, ::-1] * np.array([-1.0, 1.0], np.float32)[:, None, None] if rng.uniform() < 0.5 else f
            a = rng.uniform(0, 2 * np.pi)
            c, s_ = np.cos(a), np.sin(a)
            scale = rng.uniform(0.85, 1.15)
            out.append((np.stack((c * g[0] - s_ * g[1], s_ * g[0] + c * g[1])) * scale).astype(np.float32))
    return out, np.tile(labels, copies + 1)


def datasets() -> dict[str, tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]]:
    vtest, _ = footage.gray_frames(footage.MEDIA / "vtest.avi")
    bbb, _ = footage.gray_frames(footage.MEDIA / "bigbuckbunny.mp4")
    cut = footage.VTEST_HELD_OUT_FROM

    def vtest_real(start: int, stop: int | None, every: int) -> tuple[list, np.ndarray]:
        calm = footage.frame_pairs(vtest, 2, start, stop)[::every]
        fast = footage.frame_pairs(vtest, 10, start, stop)[::every]
        return calm + fast, np.asarray([0] * len(calm) + [1] * len(fast))

    bbb_pairs, bbb_labels = footage.bbb_labelled_pairs()
    return {
        "train_generated": scenes.generate(list(vtest[:cut:25]), 1000, seed=SEED),
        "train_vtest": vtest_real(0, cut, 2),
        "heldout_generated": scenes.generate(list(vtest[cut::25]) + list(bbb[::15]), 300, seed=SEED + 1000),
        "heldout_vtest": vtest_real(cut, None, 2),
        "heldout_bbb": (bbb_pairs, bbb_labels),
    }


def main() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)
    data = {}
    for name, (pairs, labels) in datasets().items():
        flows = compute_flows(pairs)
        data[name] = (flows_to_hsv_batch(flows), labels, flows)
        print(f"{name}: {len(labels)} pairs, {int(labels.sum())} action", flush=True)  # noqa: T201

    flows_train: list[np.ndarray] = []
    labels_train: list[np.ndarray] = []
    for name in ("train_generated", "train_vtest"):
        f, lab = augmented(data[name][2], data[name][1], copies=3, rng=np.random.default_rng(SEED))
        flows_train += f
        labels_train.append(lab)
    x = torch.from_numpy(flows_to_hsv_batch(flows_train))
    y = torch.from_numpy(np.concatenate(labels_train).astype(np.float32))[:, None]

    net = MotionCNN()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(SEED)
    t_epoch = time.perf_counter()
    for epoch in range(15):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch}: loss {total / len(x):.4f} ({time.perf_counter() - t_epoch:.0f} s)", flush=True)  # noqa: T201

    net.eval()
    metrics: dict[str, float] = {}
    with torch.no_grad():
        for name, (images, labels, _) in data.items():
            prob = torch.sigmoid(net(torch.from_numpy(images)))[:, 0].numpy()
            metrics[f"{name}_accuracy"] = float(((prob > 0.5) == labels).mean())
    held = [n for n in data if n.startswith("heldout_") and n != "heldout_generated"]
    n_real = sum(len(data[n][1]) for n in held)
    metrics["heldout_real_accuracy"] = sum(metrics[f"{n}_accuracy"] * len(data[n][1]) for n in held) / n_real
    print(json.dumps(metrics, indent=2))  # noqa: T201

    torch.onnx.export(
        Exported(net).eval(),
        (torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE),),
        str(OUT),
        input_names=["image"],
        output_names=["prob"],
        dynamic_axes={"image": {0: "batch"}, "prob": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    metrics["sha256"] = hashlib.sha256(OUT.read_bytes()).hexdigest()  # type: ignore[assignment]
    METRICS.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{OUT} sha256={metrics['sha256']}")  # noqa: T201


if __name__ == "__main__":
    main()
