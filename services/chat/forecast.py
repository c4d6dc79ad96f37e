"""Sentiment forecast: the next 1..5 intervals of a stream's 30 s series, LSTM vs baselines.

The LSTM (models/forecast.onnx, trained by `training.chat.train_forecast`) reads one step
per interval, carrying its state between calls, and predicts the deviation of each of the
next HORIZON intervals from the stream's running mean. Two baselines are computed beside
it: the running mean (mean of every interval so far) and persistence (the last value).

A stream's forecast is `trustworthy` only while its own rolling backtest (the last
`BACKTEST_EVALS` matured predictions, all horizons) has the LSTM's squared error below
the running mean's, after at least `MIN_EVALS` of them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamsight.inference import create_session

MODEL_PATH = Path(__file__).parent / "models" / "forecast.onnx"
HORIZON = 5
N_FEATURES = 4
BACKTEST_EVALS = 50
MIN_EVALS = 10


def step_features(value: float, messages: int, running_mean: float) -> list[float]:
    """The LSTM's input for one interval (shared with training, so both build it the same way):
    mean compound, log message count (scaled to ~0..1), running mean, deviation from it."""
    return [value, math.log1p(messages) / 6.0, running_mean, value - running_mean]


@dataclass(frozen=True, slots=True)
class Forecast:
    """Predictions for intervals index+1 .. index+HORIZON, made after interval `index`."""

    index: int
    lstm: tuple[float, ...]
    running_mean: tuple[float, ...]
    persistence: tuple[float, ...]
    trustworthy: bool
    lstm_mse: float | None  # rolling backtest over the stream's matured predictions
    baseline_mse: float | None
    evals: int


class ForecastModel:
    """The ONNX forecaster, shared by every stream of a service."""

    def __init__(self, model_path: str | Path = MODEL_PATH, intra_threads: int | None = 1) -> None:
        self.session = create_session(model_path, intra_threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"features", "h0", "c0"}:
            raise ValueError(f"{model_path}: expected inputs features, h0, c0; got {sorted(inputs)}")
        self.hidden = int(inputs["h0"].shape[-1])

    def initial_state(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros((1, 1, self.hidden), dtype=np.float32)
        return z, z.copy()

    def run(
        self, features: np.ndarray, state: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """features [1, T, N_FEATURES] -> deviations [T, HORIZON] and the new state."""
        dev, h, c = self.session.run(None, {"features": features.astype(np.float32), "h0": state[0], "c0": state[1]})
        return dev[0], (h, c)

    def stream(self) -> StreamForecaster:
        return StreamForecaster(self)


class StreamForecaster:
    """One stream's forecaster: call `update` once per closed 30 s interval, in order."""

    def __init__(self, model: ForecastModel) -> None:
        self.model = model
        self._state = model.initial_state()
        self._n = 0
        self._sum = 0.0
        self._index = -1
        self._pending: deque[tuple[int, tuple[float, ...], tuple[float, ...]]] = deque()
        self._errors: deque[tuple[float, float]] = deque(maxlen=BACKTEST_EVALS)

    def update(self, value: float, messages: int) -> Forecast:
        if not math.isfinite(value):
            raise ValueError(f"sentiment value must be finite, got {value}")
        self._index += 1
        idx = self._index
        # Score the predictions that targeted this interval (rolling backtest).
        for made_at, lstm, base in self._pending:
            h = idx - made_at
            if 1 <= h <= HORIZON:
                self._errors.append(((lstm[h - 1] - value) ** 2, (base[h - 1] - value) ** 2))
        while self._pending and self._pending[0][0] + HORIZON <= idx:
            self._pending.popleft()
        self._n += 1
        self._sum += value
        rm = self._sum / self._n
        feats = np.asarray([[step_features(value, messages, rm)]], dtype=np.float32)
        dev, self._state = self.model.run(feats, self._state)
        lstm = tuple(float(np.clip(rm + d, -1.0, 1.0)) for d in dev[-1])
        base = (rm,) * HORIZON
        self._pending.append((idx, lstm, base))
        n = len(self._errors)
        lstm_mse = sum(e[0] for e in self._errors) / n if n else None
        base_mse = sum(e[1] for e in self._errors) / n if n else None
        trust = n >= MIN_EVALS and lstm_mse is not None and base_mse is not None and lstm_mse < base_mse
        return Forecast(idx, lstm, base, (value,) * HORIZON, trust, lstm_mse, base_mse, n)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Mean squared error per method over every (interval, horizon) with a known outcome."""

    intervals: int
    evals: int
    mse: dict[str, float]

    def ratios(self) -> dict[str, float]:
        base = self.mse["running_mean"]
        return {k: (v / base if base > 0 else float("nan")) for k, v in self.mse.items()}


def backtest(series: Iterable[Sequence[float]], model: ForecastModel, warmup: int = 2) -> BacktestResult:
    """Replay (value, messages) pairs through a fresh stream forecaster and score LSTM,
    running mean and persistence at horizons 1..HORIZON. Predictions made before
    `warmup` intervals were seen are not scored (the running mean needs a few points)."""
    pts = [(float(v), int(n)) for v, n in series]
    stream = model.stream()
    sq = {"lstm": 0.0, "running_mean": 0.0, "persistence": 0.0}
    evals = 0
    values = [v for v, _ in pts]
    for t, (v, n) in enumerate(pts):
        f = stream.update(v, n)
        if t < warmup:
            continue
        for h in range(1, HORIZON + 1):
            if t + h < len(values):
                y = values[t + h]
                sq["lstm"] += (f.lstm[h - 1] - y) ** 2
                sq["running_mean"] += (f.running_mean[h - 1] - y) ** 2
                sq["persistence"] += (f.persistence[h - 1] - y) ** 2
                evals += 1
    mse = {k: (s / evals if evals else float("nan")) for k, s in sq.items()}
    return BacktestResult(len(pts), evals, mse)
