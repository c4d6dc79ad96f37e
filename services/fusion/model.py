"""The fusion meta-model: standardisation plus logistic regression over named features, as JSON.

A model file is plain JSON (never pickle):

    {"format": "streamsight.fusion.logreg", "version": "<name>@<n>",
     "features": ["vision.flow_mag_mean", ...], "coefficients": [...], "intercept": 0.0,
     "scaler": {"mean": [...], "scale": [...]}, "threshold": 0.5, "metadata": {...}}

`predict` gives the highlight probability and every feature's contribution to the logit,
coefficient x standardised value, so the logit is exactly intercept + sum of contributions.
A feature that is missing from the input (its modality did not arrive) is imputed with the
scaler mean: its standardised value is 0 and it contributes nothing, in either direction.
Numpy only; training (scikit-learn) lives in training/fusion.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "streamsight.fusion.logreg"


class ModelError(ValueError):
    """A model file that cannot be used (unreadable, inconsistent, wrong format)."""


@dataclass(frozen=True)
class Contribution:
    feature: str
    weight: float  # signed share of the logit
    value: float  # raw value in the feature's own unit (the imputed mean when missing)


@dataclass(frozen=True)
class Prediction:
    probability: float
    logit: float
    contributions: list[Contribution]  # every feature, largest absolute weight first
    imputed: list[str]  # features that were missing and took the scaler mean

    def top(self, n: int = 5) -> list[Contribution]:
        return self.contributions[:n]


@dataclass
class FusionModel:
    features: list[str]
    coefficients: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    version: str = "unversioned"
    threshold: float = 0.5
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coefficients = np.asarray(self.coefficients, dtype=np.float64)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.scale = np.asarray(self.scale, dtype=np.float64)
        n = len(self.features)
        if n == 0:
            raise ModelError("a fusion model needs at least one feature")
        if len(set(self.features)) != n:
            raise ModelError("feature names must be unique")
        for name, arr in (("coefficients", self.coefficients), ("scaler mean", self.mean), ("scaler scale", self.scale)):
            if arr.shape != (n,):
                raise ModelError(f"{name} has {arr.size} values for {n} features")
            if not np.all(np.isfinite(arr)):
                raise ModelError(f"{name} holds a value that is not finite")
        if np.any(self.scale <= 0):
            raise ModelError("scaler scale values must be > 0")
        if not math.isfinite(self.intercept):
            raise ModelError("intercept is not finite")
        if not 0.0 < self.threshold < 1.0:
            raise ModelError(f"threshold must be in (0, 1), got {self.threshold}")

    # -- modalities ----------------------------------------------------------------------
    @property
    def modalities(self) -> set[str]:
        """Prefixes of the feature names ("vision", "audio", "chat")."""
        return {f.split(".", 1)[0] for f in self.features}

    # -- inference -----------------------------------------------------------------------
    def standardise(self, values: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Raw vector (missing and non-finite -> mean), standardised vector, imputed names."""
        raw = self.mean.copy()
        imputed: list[str] = []
        for k, name in enumerate(self.features):
            v = values.get(name)
            if v is None or not math.isfinite(float(v)):
                imputed.append(name)
            else:
                raw[k] = float(v)
        return raw, (raw - self.mean) / self.scale, imputed

    def predict(self, values: Mapping[str, float]) -> Prediction:
        raw, z, imputed = self.standardise(values)
        parts = self.coefficients * z
        logit = float(self.intercept + parts.sum())
        order = np.argsort(-np.abs(parts), kind="stable")
        contributions = [Contribution(self.features[k], float(parts[k]), float(raw[k])) for k in order]
        return Prediction(_sigmoid(logit), logit, contributions, imputed)

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities for rows of raw values in `features` order (NaN = missing)."""
        x = np.asarray(matrix, dtype=np.float64)
        x = np.where(np.isfinite(x), x, self.mean)
        logits = self.intercept + ((x - self.mean) / self.scale) @ self.coefficients
        return np.array([_sigmoid(float(v)) for v in logits])

    # -- storage -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.version,
            "features": list(self.features),
            "coefficients": [float(v) for v in self.coefficients],
            "intercept": float(self.intercept),
            "scaler": {"mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale]},
            "threshold": float(self.threshold),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "FusionModel":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ModelError(f"not a fusion model (format must be {FORMAT!r})")
        try:
            return cls(
                features=[str(f) for f in data["features"]],
                coefficients=np.asarray(data["coefficients"], dtype=np.float64),
                intercept=float(data["intercept"]),
                mean=np.asarray(data["scaler"]["mean"], dtype=np.float64),
                scale=np.asarray(data["scaler"]["scale"], dtype=np.float64),
                version=str(data.get("version", "unversioned")),
                threshold=float(data.get("threshold", 0.5)),
                metadata=dict(data.get("metadata", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"fusion model is incomplete or malformed: {exc!r}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "FusionModel":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read fusion model {path}: {exc}") from None
        try:
            return cls.from_dict(data)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def choose(models: Sequence[FusionModel], present: set[str]) -> FusionModel:
    """The model for a window whose `present` modalities arrived: the one with most features
    among those needing nothing absent, else the first (it then imputes what is missing)."""
    fitting = [m for m in models if m.modalities <= present]
    if not fitting:
        return models[0]
    return max(fitting, key=lambda m: len(m.features))
