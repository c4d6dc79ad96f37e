"""The corruption classifier: glitch_cnn.onnx over a frame's tiles, max over tiles.

Each tile gets probabilities over KINDS; a frame's corruption score is the highest
P(not clean) of its tiles, and its kind is the corrupted kind with the highest probability
summed over the tiles (a green band lights several tiles the same way). Inference goes through
streamsight.inference (CUDA provider when a GPU is visible, CPU otherwise). Frames of several
streams can be classified in one call; their tiles are batched together. The model runs in int8
(glitch_cnn.int8.onnx, static quantization of the fp32 model by training/glitch/quantize.py:
1.5-1.7x the tiles per CPU second here, the same incidents on held-out footage; see
models/MODEL.md) unless fp32 is asked for. Beside the model,
each frame is checked for flat green and grey fill bands (bands.py), which the model misses
when they are thin; a frame whose tiles look like stripes (SHEAR_GATE) is checked for the
row shear of a wrong width (shear.py), which the model scores under its open score when the
shear is slight; and every frame is checked for colour slid against the luma as a wrong height
slides it (chroma.py), which the model mostly misses for heights 8-30 rows off.

A second opinion on stripes (`verifier`, the service's default): a frame whose stripes
probability reaches `verify_from` (the detector's open score) is scored again by
stripes_verifier.int8.onnx (model 8, trained with real game tiles that model 5 called stripes;
models/MODEL.md, Session 12), and its stripes probability and stripes tile grid become the lower
of the two models'. Each model calls some bright, regular game texture stripes, but not the same
ones, so both must agree; a true wrong-stride read is called by both. It runs only on the rare
frames that reach the open score, so it costs next to nothing on clean streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.glitch import chroma
from services.glitch import shear as row_shear
from services.glitch import tiles as tiling
from services.glitch.bands import Band, find_bands
from streamsight.inference import create_session, session_provider

MODEL_DIR = Path(__file__).resolve().parent / "models"
MODEL_FILE = "glitch_cnn.onnx"  # fp32, as trained
INT8_FILE = "glitch_cnn.int8.onnx"  # the same model quantized (training/glitch/quantize.py)
MODEL_FILES = {"int8": INT8_FILE, "fp32": MODEL_FILE}
VERIFIER_FILE = "stripes_verifier.int8.onnx"  # model 8 (int8), the second opinion on stripes
DEFAULT_PRECISION = "int8"
# Output order of the model (training/glitch/dataset.py labels).
KINDS = ("clean", "stripes", "macroblocking", "green", "grey")
# The shear check runs when a tile's stripes probability reaches this: vtest read 2-3 pixels too
# narrow scored 0.5-0.9 on every tile, clean development scenes mostly under 0.6.
SHEAR_GATE = 0.6


@dataclass(frozen=True)
class FrameScore:
    """What the classifier says about one frame."""

    corrupt: float  # highest P(corrupted) over the tiles, 0..1
    kind: str  # most likely corrupted kind (meaningful when `corrupt` is high)
    tile_scores: np.ndarray  # P(corrupted) per tile, in tiles.grid order
    kinds: dict[str, float] = field(default_factory=dict)  # highest probability of each corrupted kind over the tiles
    bands: tuple[Band, ...] = ()  # flat green/grey fill bands in the frame (bands.find_bands)
    sheared: bool = False  # rows shear like a wrong width's (shear.wrong_width; checked past SHEAR_GATE only)
    chroma_shifted: bool = False  # colour slid like a wrong height's (chroma.wrong_height)
    stripes_grid: np.ndarray | None = None  # P(stripes) per tile as [tile rows, tile columns] (tiles.grid order); None: not known

    @property
    def misread(self) -> bool:
        """A model-free check says the picture was read with a wrong width or height (stripes)."""
        return self.sheared or self.chroma_shifted


def shipped_model(precision: str = DEFAULT_PRECISION) -> Path:
    """The shipped model file of a precision (int8 or fp32)."""
    if precision not in MODEL_FILES:
        raise ValueError(f"model precision must be one of {sorted(MODEL_FILES)}, got {precision!r}")
    return MODEL_DIR / MODEL_FILES[precision]


def shipped_verifier() -> Path:
    """The shipped second opinion on stripes."""
    return MODEL_DIR / VERIFIER_FILE


class GlitchClassifier:
    """Thread-safe (onnxruntime sessions are); `classify` blocks: run it off the event loop.

    `model_path` None takes the shipped model of `precision`. `verifier` (an ONNX file of the same
    inputs and outputs; None: no second opinion) scores again the frames whose stripes probability
    reaches `verify_from`, and the lower stripes probability of the two counts."""

    def __init__(self, model_path: str | Path | None = None, intra_threads: int | None = None, max_batch: int = 32,
                 precision: str = DEFAULT_PRECISION, verifier: str | Path | None = None, verify_from: float = 0.95) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0 < verify_from <= 1:
            raise ValueError(f"verify_from must be in (0, 1], got {verify_from}")
        self.path = Path(model_path) if model_path is not None else shipped_model(precision)
        self.max_batch = max_batch
        self.session = create_session(self.path, intra_threads)
        self.provider = session_provider(self.session)
        self._input = self.session.get_inputs()[0].name
        self.verifier = GlitchClassifier(verifier, intra_threads, max_batch) if verifier is not None else None
        self.verify_from = verify_from

    def classify(self, frames: Sequence[np.ndarray]) -> list[FrameScore]:
        """RGB frames [H,W,3] uint8 (sizes may differ) -> one FrameScore each, same order."""
        frames = [np.asarray(frame) for frame in frames]
        cut, bands, shapes = [], [], []
        for i, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame {i}: expected RGB uint8 [H,W,3], got {frame.dtype} {frame.shape}")
            cut.append(tiling.cut(frame)[0])
            shapes.append(tiling.shape(*frame.shape[:2]))
            bands.append(tuple(find_bands(frame)))
        if not cut:
            return []
        batch = np.concatenate(cut)
        probs = self.tile_probabilities(batch)
        out, start = [], 0
        for frame, t, frame_bands, shape in zip(frames, cut, bands, shapes):
            p = probs[start : start + len(t)]
            start += len(t)
            bad = 1.0 - p[:, 0]
            kind = KINDS[1 + int(np.argmax(p[:, 1:].sum(axis=0)))]
            kinds = {k: float(p[:, i].max()) for i, k in enumerate(KINDS) if i}
            sheared = kinds["stripes"] >= SHEAR_GATE and row_shear.wrong_width(row_shear.measure(frame))
            shifted = chroma.wrong_height(chroma.measure(frame))
            stripes = p[:, 1]
            if self.verifier is not None and kinds["stripes"] >= self.verify_from:
                stripes = np.minimum(stripes, self.verifier.tile_probabilities(t)[:, 1])
                kinds["stripes"] = float(stripes.max())
            out.append(FrameScore(float(bad.max()), kind, bad, kinds, frame_bands, sheared, shifted, stripes.reshape(shape).copy()))
        return out

    def tile_probabilities(self, tiles: np.ndarray) -> np.ndarray:
        """Tiles [N,224,224,3] uint8 -> probabilities [N, len(KINDS)] float32."""
        chw = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32)
        parts = [self.session.run(None, {self._input: chw[i : i + self.max_batch]})[0] for i in range(0, len(chw), self.max_batch)]
        return np.concatenate(parts) if parts else np.zeros((0, len(KINDS)), np.float32)

    def warm_up(self) -> None:
        self.classify([np.zeros((tiling.TILE, tiling.TILE, 3), np.uint8)])
        if self.verifier is not None:
            self.verifier.warm_up()
