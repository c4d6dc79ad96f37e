"""Sound-event tagging of one window with an AudioSet-ontology ONNX model.

Two kinds of model are understood:

- "panns": a PANNs network converted by `training.audio.convert_panns`: input
  `waveform` (batch, samples) at the model's rate (32 kHz, or 16 kHz for
  Cnn14_16k), the log-mel front end inside the graph, output (batch, 527)
  sigmoid scores in AudioSet order. The window is cut into segments (2 s, no
  overlap, by default), run as one batch.
- "yamnet": 16 kHz, 0.96 s frames every 0.48 s, 521 classes. A model with a
  (batch, 15360) input gets the frames as a batch; one with a 1-D waveform input
  (the TF-Hub export) frames the window itself and returns one row per frame.

Audio at another rate is resampled to the model's. The configured classes are
reported as `tag_<class>_mean` and `tag_<class>_max` over the segments (0-1).
Classes the model does not have (YAMNet lacks "Male speech") are left out and
listed in `missing_classes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from services.audio.labels import Label, find_label, labels_for, slug
from services.audio.resample import resample
from streamsight.inference import create_session, session_provider

log = structlog.get_logger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = (
    "Speech", "Male speech", "Female speech", "Child speech", "Music", "Laughter", "Belly laugh",
    "Cheering", "Applause", "Crowd", "Screaming", "Shout", "Gunshot/gunfire", "Machine gun",
    "Fusillade", "Artillery fire", "Explosion", "Boom", "Walk/footsteps", "Thunder",
)  # fmt: skip

# Model rate and framing (segment, hop in seconds) by kind.
KIND_DEFAULTS: dict[str, tuple[int, float, float]] = {
    "panns": (32000, 2.0, 2.0),
    "yamnet": (16000, 0.96, 0.48),
}


class TaggerError(ValueError):
    """The configured tagger model cannot be used (wrong file, shape or class count)."""


@dataclass(frozen=True)
class TaggerConfig:
    """Which ONNX tagger to load and what to report.

    `sample_rate`: the model's rate; None reads the model's `sample_rate` metadata
    (written by the converter) or takes the kind's default. `segment_s`/`hop_s`:
    framing; None takes the kind's default (YAMNet's 0.96 s is fixed by the model
    when its input has a static length).
    """

    path: Path
    kind: str = "panns"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    sample_rate: int | None = None
    segment_s: float | None = None
    hop_s: float | None = None
    intra_threads: int | None = None
    name: str | None = None


@dataclass
class OnnxTagger:
    """A loaded tagger; `tag(audio, rate)` gives the window's class features."""

    config: TaggerConfig
    name: str = field(init=False)
    provider: str = field(init=False)
    sample_rate: int = field(init=False)
    classes: list[tuple[str, Label]] = field(init=False)
    missing_classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        if cfg.kind not in KIND_DEFAULTS:
            raise TaggerError(f"unknown tagger kind {cfg.kind!r}; known: {sorted(KIND_DEFAULTS)}")
        self._labels = labels_for(cfg.kind)
        try:
            self._session = create_session(cfg.path, cfg.intra_threads)
        except FileNotFoundError as exc:
            raise TaggerError(str(exc)) from exc
        except Exception as exc:  # onnxruntime raises its own types for a corrupt file
            raise TaggerError(f"cannot load ONNX tagger {cfg.path}: {exc}") from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        default_rate, default_seg, default_hop = KIND_DEFAULTS[cfg.kind]
        self.sample_rate = int(cfg.sample_rate or meta.get("sample_rate", default_rate))
        self.name = cfg.name or meta.get("arch") or Path(cfg.path).stem
        self.provider = session_provider(self._session)

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise TaggerError(f"{cfg.path}: a tagger takes one waveform input, this model takes {len(inputs)}")
        self._input = inputs[0].name
        shape = inputs[0].shape
        if len(shape) not in (1, 2):
            raise TaggerError(f"{cfg.path}: expected a waveform input of rank 1 or 2, got shape {shape}")
        self._batched = len(shape) == 2
        fixed = shape[-1] if isinstance(shape[-1], int) else None
        segment = cfg.segment_s or default_seg
        if fixed is not None:
            segment = fixed / self.sample_rate
        self._segment = int(round(segment * self.sample_rate))
        self._hop = int(round((cfg.hop_s or default_hop) * self.sample_rate))
        if self._segment <= 0 or self._hop <= 0:
            raise TaggerError("tagger segment and hop must be positive")
        self._output = self._pick_output()

        self.classes, self.missing_classes = [], []
        for wanted in cfg.classes:
            label = find_label(self._labels, wanted)
            if label is None:
                self.missing_classes.append(wanted)
            else:
                self.classes.append((slug(wanted.replace("/", ",")), label))
        if self.missing_classes:
            log.warning("tagger_classes_missing", tagger=self.name, classes=self.missing_classes)
        log.info("tagger_loaded", tagger=self.name, kind=cfg.kind, provider=self.provider, rate=self.sample_rate)

    def _pick_output(self) -> str:
        count = len(self._labels)
        outputs = self._session.get_outputs()
        for out in outputs:
            if out.shape and out.shape[-1] == count:
                return out.name
        for out in outputs:  # a class axis of unknown size: trust the conventional names
            if out.name in ("clipwise_output", "scores") and out.shape and not isinstance(out.shape[-1], int):
                return out.name
        raise TaggerError(
            f"{self.config.path}: no output with {count} classes for kind {self.config.kind!r} "
            f"(outputs: {[(o.name, o.shape) for o in outputs]})"
        )

    def frames(self, audio: np.ndarray) -> np.ndarray:
        """Cut audio at the model's rate into (n, segment) frames; the last one ends at the audio's end."""
        seg, hop = self._segment, self._hop
        if audio.size <= seg:
            return np.pad(audio, (0, seg - audio.size))[None, :]
        starts = list(range(0, audio.size - seg + 1, hop))
        if starts[-1] + seg < audio.size:
            starts.append(audio.size - seg)
        return np.stack([audio[s : s + seg] for s in starts])

    def scores(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(frames, classes) scores of mono `audio` at `sample_rate` Hz."""
        x = resample(np.asarray(audio, dtype=np.float32), sample_rate, self.sample_rate)
        if self._batched:
            feed = self.frames(x)
        else:
            feed = np.pad(x, (0, max(0, self._segment - x.size)))
        (out,) = self._session.run([self._output], {self._input: feed.astype(np.float32)})
        out = np.asarray(out, dtype=np.float32).reshape(-1, len(self._labels))
        if not np.all(np.isfinite(out)):
            raise TaggerError(f"tagger {self.name} produced non-finite scores")
        return out

    def tag(self, audio: np.ndarray, sample_rate: int) -> dict[str, float]:
        """`tag_<class>_mean` and `tag_<class>_max` of the configured classes over the window."""
        s = self.scores(audio, sample_rate)
        features: dict[str, float] = {}
        for key, label in self.classes:
            column = s[:, label.index]
            features[f"tag_{key}_mean"] = float(column.mean())
            features[f"tag_{key}_max"] = float(column.max())
        return features
