"""Chat forecast: sentiment mean and activity (messages/s) 30, 60 and 90 s ahead, with intervals.

A stream's chat becomes one point per 30 s interval (`windows.SeriesPoint`): the mean
compound, the message count, the emote density and the messages per 10 s third. After
each interval the forecaster predicts both series for the next HORIZON intervals:

- **lstm**: the ONNX model (models/forecast.onnx, trained by
  `training.chat.train_forecast`). It reads `SeriesState`'s step features (both series,
  the emote density as an exogenous input, the stream's running statistics) one interval
  per call, carrying its state (the interval's last thirds among them: chat bursts
  decay within 10-30 s, `training.chat.activity_study`), and predicts corrections:
  sentiment as a deviation from the running mean shrunk towards the training chat's
  mean (`SeriesState.anchor`; ONNX metadata `sentiment_prior`, `sentiment_prior_weight`),
  activity as a relative deviation from its running mean (so it does not depend on how
  busy a channel is). Zero output is the (shrunk) running-mean forecast.
- **running_mean** (mean of every interval so far) and **persistence** (the last value):
  the baselines, computed beside it.
- **intervals**: `lstm +- k * scale` (split conformal on normalised residuals), where
  scale is the stream's own running standard deviation of that series, its variance
  shrunk towards the training chat's spread (ONNX metadata `scale_prior`,
  `scale_prior_weight`, per series) and floored (0.02 for sentiment, the Poisson noise
  of the running rate for activity), and k per series and horizon is the nominal
  quantile of |error| / scale on out-of-fold training predictions (metadata
  `interval_k`, `interval_level`).

A series' forecast is `trustworthy` only while the stream's own rolling backtest (its
last `BACKTEST_EVALS` matured predictions, all horizons, at least `MIN_EVALS`) has the
LSTM's squared error below the better of the two baselines.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamsight.inference import create_session

MODEL_PATH = Path(__file__).parent / "models" / "forecast.onnx"
SERIES = ("sentiment", "activity")
HORIZON = 3  # intervals ahead: 30, 60, 90 s
N_FEATURES = 11
BACKTEST_EVALS = 50
MIN_EVALS = 10
DEFAULT_LEVEL = 0.8
SENTIMENT_SCALE_FLOOR = 0.02
MAX_REL = 3.0  # relative rate deviations are clipped to -1..MAX_REL (a burst of x4 is a burst)
EWMA_ALPHA = 0.3


def _z(level: float) -> float:
    """Two-sided standard normal quantile (the fallback when a model carries no calibration)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


class SeriesState:
    """One stream's running statistics and the model's per-interval input (shared with
    training, so both compute the features the same way)."""

    def __init__(self, interval_s: float = 30.0, prior: float = 0.0, prior_weight: float = 0.0,
                 scale_prior: Sequence[float] = (0.0, 0.0), scale_prior_weight: Sequence[float] = (0.0, 0.0)) -> None:
        self.interval_s = interval_s
        self.prior = prior
        self.prior_weight = prior_weight
        self.scale_prior = tuple(scale_prior)  # sentiment std; activity std relative to the mean rate
        self.scale_prior_weight = tuple(scale_prior_weight)  # per series, in intervals
        self.n = 0
        self.mean = [0.0, 0.0]  # sentiment, activity
        self._m2 = [0.0, 0.0]
        self.ewma_rel = 0.0
        self.last = [0.0, 0.0]

    def update(self, value: float, messages: int, emote_density: float = 0.0, parts: Sequence[int] = ()) -> list[float]:
        """Take one interval; return its step features. `parts`: its messages per third
        (oldest first); without them the interval counts as even."""
        rate = messages / self.interval_s
        self.n += 1
        for i, x in enumerate((value, rate)):
            d = x - self.mean[i]
            self.mean[i] += d / self.n
            self._m2[i] += d * (x - self.mean[i])
        self.last = [value, rate]
        rel = self.relative(rate)
        self.ewma_rel = rel if self.n == 1 else EWMA_ALPHA * rel + (1 - EWMA_ALPHA) * self.ewma_rel
        return [
            value,
            self.mean[0],
            value - self.mean[0],
            math.log1p(self.n) / 5.0,
            rel,
            math.log1p(rate) / 3.0,
            min(max(emote_density, 0.0), 3.0) / 3.0,
            self.ewma_rel,
            # The tail of the interval: a burst decays within 10-30 s (activity_study.py), so
            # its last thirds say more about the next interval than the whole does.
            self.relative(parts[-1] * len(parts) / self.interval_s) if len(parts) >= 2 else rel,
            self.relative(parts[-2] * len(parts) / self.interval_s) if len(parts) >= 2 else rel,
            1.0 / self.n,  # a stream's first minutes (greetings) are busier than its level
        ]

    def relative(self, rate: float) -> float:
        base = max(self.mean[1], 1.0 / self.interval_s)
        return min(max(rate / base - 1.0, -1.0), MAX_REL)

    def anchor(self) -> float:
        """The sentiment forecast before the model's correction: the running mean shrunk
        towards the training chat's mean, as if `prior_weight` intervals of it had been seen
        (a stream's first minutes say little about its level)."""
        return (self.n * self.mean[0] + self.prior_weight * self.prior) / max(self.n + self.prior_weight, 1e-9)

    def std(self, i: int) -> float:
        return math.sqrt(self._m2[i] / (self.n - 1)) if self.n >= 2 else 0.0

    def scale(self, i: int) -> float:
        """The interval's unit: the stream's std of the series, its variance shrunk towards
        the training chat's as if `scale_prior_weight[i]` intervals of it had been seen (a std
        from a stream's first few intervals is itself noisy), then floored."""
        base = max(self.mean[1], 1.0 / self.interval_s)
        prior = self.scale_prior[0] if i == 0 else self.scale_prior[1] * base
        df, w = max(self.n - 1, 0), self.scale_prior_weight[i]
        std = math.sqrt((df * self.std(i) ** 2 + w * prior**2) / (df + w)) if df + w > 0 else 0.0
        if i == 0:
            return max(std, SENTIMENT_SCALE_FLOOR)
        return max(std, math.sqrt(base / self.interval_s))  # Poisson noise of the running rate

    def to_values(self, out: Sequence[float]) -> tuple[list[float], list[float]]:
        """The model's output row (HORIZON sentiment deviations, HORIZON relative rate
        deviations) as forecasts of both series."""
        anchor = self.anchor()
        sent = [float(np.clip(anchor + d, -1.0, 1.0)) for d in out[:HORIZON]]
        base = max(self.mean[1], 1.0 / self.interval_s)
        act = [max(0.0, self.mean[1] + base * float(np.clip(d, -1.0, MAX_REL))) for d in out[HORIZON : 2 * HORIZON]]
        return sent, act


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    """One series' forecasts for intervals index+1 .. index+HORIZON."""

    lstm: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    running_mean: tuple[float, ...]
    persistence: tuple[float, ...]
    trustworthy: bool
    lstm_mse: float | None  # the stream's rolling backtest
    baseline_mse: float | None  # of the better baseline over the same predictions
    evals: int


@dataclass(frozen=True, slots=True)
class Forecast:
    """Both series' forecasts, made after interval `index`."""

    index: int
    sentiment: SeriesForecast
    activity: SeriesForecast
    level: float

    @property
    def trustworthy(self) -> bool:
        return self.sentiment.trustworthy


class ForecastModel:
    """The ONNX forecaster, shared by every stream of a service."""

    def __init__(self, model_path: str | Path = MODEL_PATH, intra_threads: int | None = 1) -> None:
        self.session = create_session(model_path, intra_threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"features", "h0", "c0"}:
            raise ValueError(f"{model_path}: expected inputs features, h0, c0; got {sorted(inputs)}")
        if inputs["features"].shape[-1] != N_FEATURES:
            raise ValueError(f"{model_path}: expects {inputs['features'].shape[-1]} features per step, this code makes {N_FEATURES}")
        self.hidden = int(inputs["h0"].shape[-1])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.level = float(meta.get("interval_level", DEFAULT_LEVEL))
        k = json.loads(meta["interval_k"]) if "interval_k" in meta else {}
        z = _z(self.level)
        self.k = {s: tuple(float(v) for v in k.get(s, [z] * HORIZON)) for s in SERIES}
        self.prior = float(meta.get("sentiment_prior", 0.0))
        self.prior_weight = float(meta.get("sentiment_prior_weight", 0.0))
        self.scale_prior = tuple(json.loads(meta.get("scale_prior", "[0.0, 0.0]")))
        self.scale_prior_weight = tuple(json.loads(meta.get("scale_prior_weight", "[0.0, 0.0]")))

    def initial_state(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros((1, 1, self.hidden), dtype=np.float32)
        return z, z.copy()

    def run(
        self, features: np.ndarray, state: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """features [1, T, N_FEATURES] -> outputs [T, 2 * HORIZON] and the new state."""
        out, h, c = self.session.run(None, {"features": features.astype(np.float32), "h0": state[0], "c0": state[1]})
        return out[0], (h, c)

    def stream(self, interval_s: float = 30.0) -> StreamForecaster:
        return StreamForecaster(self, interval_s)


class _Tracker:
    """A series' rolling backtest inside a stream: squared errors of matured predictions."""

    def __init__(self) -> None:
        self.pending: deque[tuple[int, tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = deque()
        self.errors: deque[tuple[float, float, float]] = deque(maxlen=BACKTEST_EVALS)

    def observe(self, idx: int, value: float) -> None:
        for made_at, lstm, rm, pers in self.pending:
            h = idx - made_at
            if 1 <= h <= HORIZON:
                self.errors.append(((lstm[h - 1] - value) ** 2, (rm[h - 1] - value) ** 2, (pers[h - 1] - value) ** 2))
        while self.pending and self.pending[0][0] + HORIZON <= idx:
            self.pending.popleft()

    def verdict(self) -> tuple[bool, float | None, float | None, int]:
        n = len(self.errors)
        if not n:
            return False, None, None, 0
        lstm = sum(e[0] for e in self.errors) / n
        best = min(sum(e[1] for e in self.errors), sum(e[2] for e in self.errors)) / n
        return n >= MIN_EVALS and lstm < best, lstm, best, n


class StreamForecaster:
    """One stream's forecaster: call `update` once per closed interval, in order."""

    def __init__(self, model: ForecastModel, interval_s: float = 30.0) -> None:
        self.model = model
        self.series = SeriesState(interval_s, model.prior, model.prior_weight, model.scale_prior, model.scale_prior_weight)
        self._state = model.initial_state()
        self._index = -1
        self._track = {s: _Tracker() for s in SERIES}

    def update(self, value: float, messages: int, emote_density: float = 0.0, parts: Sequence[int] = ()) -> Forecast:
        if not math.isfinite(value) or not math.isfinite(emote_density):
            raise ValueError(f"sentiment value and emote density must be finite, got {value}, {emote_density}")
        if messages < 0 or any(n < 0 for n in parts):
            raise ValueError(f"message count must be >= 0, got {messages} (parts {tuple(parts)})")
        self._index += 1
        idx = self._index
        st = self.series
        feats = st.update(value, messages, emote_density, parts)
        observed = (value, messages / st.interval_s)
        for name, y in zip(SERIES, observed):
            self._track[name].observe(idx, y)
        out, self._state = self.model.run(np.asarray([[feats]], dtype=np.float32), self._state)
        preds = st.to_values(out[-1])
        result = {}
        for i, name in enumerate(SERIES):
            lstm = tuple(preds[i])
            rm = (st.mean[i],) * HORIZON
            pers = (observed[i],) * HORIZON
            half = [k * st.scale(i) for k in self.model.k[name]]
            lo = tuple(v - w for v, w in zip(lstm, half))
            hi = tuple(v + w for v, w in zip(lstm, half))
            if i == 0:
                lo, hi = tuple(max(-1.0, v) for v in lo), tuple(min(1.0, v) for v in hi)
            else:
                lo = tuple(max(0.0, v) for v in lo)
            self._track[name].pending.append((idx, lstm, rm, pers))
            trust, lstm_mse, base_mse, n = self._track[name].verdict()
            result[name] = SeriesForecast(lstm, lo, hi, rm, pers, trust, lstm_mse, base_mse, n)
        return Forecast(idx, result["sentiment"], result["activity"], self.model.level)


@dataclass(frozen=True, slots=True)
class SeriesBacktest:
    """One series over a log: MSE per method and the intervals' coverage, over every
    (interval t >= warmup, horizon 1..HORIZON) whose outcome is in the log; `per_horizon`
    holds the same for each horizon alone."""

    mse: dict[str, float]
    coverage: float
    evals: int
    per_horizon: tuple[SeriesBacktest, ...] = ()

    def ratio_to_best(self) -> float:
        best = min(self.mse["running_mean"], self.mse["persistence"])
        return self.mse["lstm"] / best if best > 0 else float("nan")

    def as_dict(self) -> dict:
        out = {"mse": self.mse, "coverage": self.coverage, "evals": self.evals, "ratio_to_best_baseline": self.ratio_to_best()}
        if self.per_horizon:
            out["per_horizon"] = [h.as_dict() for h in self.per_horizon]
        return out


@dataclass(frozen=True, slots=True)
class BacktestResult:
    intervals: int
    level: float
    series: dict[str, SeriesBacktest]


def _scored(sq: dict[str, float], covered: int, evals: int, per_horizon: tuple[SeriesBacktest, ...] = ()) -> SeriesBacktest:
    nan = float("nan")
    return SeriesBacktest({k: (v / evals if evals else nan) for k, v in sq.items()}, covered / evals if evals else nan, evals, per_horizon)


def backtest(points: Iterable[Sequence], model: ForecastModel, warmup: int = 2, interval_s: float = 30.0) -> BacktestResult:
    """Replay (mean compound, messages[, emote density[, messages per third]]) per interval
    (`SeriesPoint.inputs()`) through a fresh stream forecaster and score LSTM, running mean
    and persistence and the intervals' coverage. Predictions made before `warmup` + 1
    intervals were seen are not scored."""
    pts = [(float(p[0]), int(p[1]), float(p[2]) if len(p) > 2 else 0.0, tuple(p[3]) if len(p) > 3 else ()) for p in points]
    truth = {"sentiment": [p[0] for p in pts], "activity": [p[1] / interval_s for p in pts]}
    stream = model.stream(interval_s)
    methods = ("lstm", "running_mean", "persistence")
    sq = {s: [dict.fromkeys(methods, 0.0) for _ in range(HORIZON)] for s in SERIES}
    covered = {s: [0] * HORIZON for s in SERIES}
    evals = [0] * HORIZON
    for t, p in enumerate(pts):
        f = stream.update(*p)
        if t < warmup:
            continue
        for h in range(1, HORIZON + 1):
            if t + h >= len(pts):
                break
            evals[h - 1] += 1
            for name in SERIES:
                sf: SeriesForecast = getattr(f, name)
                y = truth[name][t + h]
                for m in methods:
                    sq[name][h - 1][m] += (getattr(sf, m)[h - 1] - y) ** 2
                covered[name][h - 1] += sf.lower[h - 1] <= y <= sf.upper[h - 1]
    series = {}
    for s in SERIES:
        per = tuple(_scored(sq[s][h], covered[s][h], evals[h]) for h in range(HORIZON))
        total = {m: sum(sq[s][h][m] for h in range(HORIZON)) for m in methods}
        series[s] = _scored(total, sum(covered[s]), sum(evals), per)
    return BacktestResult(len(pts), model.level, series)
