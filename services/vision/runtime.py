"""ONNX Runtime execution of the three vision models, batched across frame pairs and streams.

`VisionModels` opens flow.onnx, motion_cnn.onnx and frame_cnn.onnx with
`streamsight.inference.create_session` (CUDA provider when onnxruntime sees a GPU, CPU
otherwise) and exposes numpy-in / numpy-out calls. Inputs from many streams are passed
together; flow pairs are grouped by frame size (streams may differ in height) and every
group is run in chunks of at most `max_batch`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

from services.vision.flowviz import flows_to_hsv_batch
from streamsight.inference import create_session, session_provider

log = structlog.get_logger(__name__)

MODEL_DIR = Path(__file__).resolve().parent / "models"
FLOW_MODEL = "flow.onnx"
MOTION_MODEL = "motion_cnn.onnx"
FRAME_MODEL = "frame_cnn.onnx"
CNN_INPUT_SIZE = 224
EMBEDDING_SIZE = 1280


def _as_gray_batch(frames: np.ndarray | Sequence[np.ndarray], name: str) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] != 1:
        raise ValueError(f"{name}: expected gray frames [N,H,W] or [N,1,H,W], got shape {arr.shape}")
    if arr.shape[2] < 8 or arr.shape[3] < 8:
        raise ValueError(f"{name}: frames of {arr.shape[2]}x{arr.shape[3]} are too small for flow (min 8x8)")
    return arr.astype(np.float32, copy=False)


class VisionModels:
    """The vision service's models. Thread-safe for concurrent `run` calls (onnxruntime is)."""

    def __init__(self, model_dir: str | Path = MODEL_DIR, intra_threads: int | None = None, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        model_dir = Path(model_dir)
        self.max_batch = max_batch
        self._flow = create_session(model_dir / FLOW_MODEL, intra_threads, layout_optimizations=False)
        self._motion = create_session(model_dir / MOTION_MODEL, intra_threads)
        self._frame = create_session(model_dir / FRAME_MODEL, intra_threads)
        self.providers = {
            "flow": session_provider(self._flow),
            "motion_cnn": session_provider(self._motion),
            "frame_cnn": session_provider(self._frame),
        }
        log.info("vision models loaded", model_dir=str(model_dir), providers=self.providers, intra_threads=intra_threads)

    @property
    def provider(self) -> str:
        """'cuda' when every model runs on the GPU, else 'cpu' (what health and logs report)."""
        return "cuda" if all(p == "cuda" for p in self.providers.values()) else "cpu"

    def _chunks(self, n: int) -> range:
        return range(0, n, self.max_batch)

    def flow(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """Same-size gray frames [N,H,W] (0..255, any numeric dtype) -> flow [N,2,H,W] float32 pixels."""
        a = _as_gray_batch(prev, "prev")
        b = _as_gray_batch(cur, "cur")
        if a.shape != b.shape:
            raise ValueError(f"prev and cur must have the same shape, got {a.shape} and {b.shape}")
        out = [
            self._flow.run(None, {"frame1": a[i : i + self.max_batch], "frame2": b[i : i + self.max_batch]})[0]
            for i in self._chunks(len(a))
        ]
        return np.concatenate(out) if out else np.zeros((0, 2) + a.shape[2:], np.float32)

    def flow_pairs(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Pairs of [H,W] gray frames, sizes may differ between pairs -> list of [2,H,W] flows, same order."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (a, b) in enumerate(pairs):
            if np.shape(a) != np.shape(b) or np.ndim(a) != 2:
                raise ValueError(f"pair {i}: expected two [H,W] frames of one size, got {np.shape(a)} and {np.shape(b)}")
            groups[np.shape(a)].append(i)
        result: list[np.ndarray] = [np.empty(0)] * len(pairs)
        for indices in groups.values():
            flows = self.flow(np.stack([pairs[i][0] for i in indices]), np.stack([pairs[i][1] for i in indices]))
            for i, f in zip(indices, flows):
                result[i] = f
        return result

    def motion_probability(self, flows: Sequence[np.ndarray]) -> np.ndarray:
        """Flow fields [2,H,W] (any sizes) -> P(high motion) per field, float32 [N]."""
        images = flows_to_hsv_batch(list(flows))
        out = [
            self._motion.run(None, {"image": images[i : i + self.max_batch]})[0].reshape(-1)
            for i in self._chunks(len(images))
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def embed(self, rgb: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """RGB frames [N,224,224,3] uint8 -> L2-normalised embeddings [N,1280] float32."""
        arr = np.asarray(rgb)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (CNN_INPUT_SIZE, CNN_INPUT_SIZE, 3):
            raise ValueError(f"expected RGB frames [N,{CNN_INPUT_SIZE},{CNN_INPUT_SIZE},3], got shape {arr.shape}")
        chw = np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32)
        out = [self._frame.run(["embedding"], {"rgb": chw[i : i + self.max_batch]})[0] for i in self._chunks(len(chw))]
        emb = np.concatenate(out) if out else np.zeros((0, EMBEDDING_SIZE), np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-12)).astype(np.float32)

    def warm_up(self, height: int = 180, width: int = 320) -> None:
        """One inference per model so the first real batch does not pay for allocation."""
        zeros = np.zeros((1, height, width), np.float32)
        flows = self.flow(zeros, zeros)
        self.motion_probability(list(flows))
        self.embed(np.zeros((1, CNN_INPUT_SIZE, CNN_INPUT_SIZE, 3), np.uint8))
