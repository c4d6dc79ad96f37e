"""Moments at 1 s: a peak and its bounds, from the per-second values the analysers publish beside
their window features.

Signals (per second of media time, from the scored windows' features):

  loudness  audio.loudness_s<k>        LUFS, highest momentary loudness in the second
  onset     audio.onset_s<k>           LU, sharpest 100 ms loudness rise in the second
  motion    vision.motion_s<k>         mean optical-flow magnitude in the second
  chat      chat.chat_messages_s<k>    chat messages in the second

Each is turned into a robust z-score against the stream's own level (median and MAD of the
seconds seen so far, the last `BASELINE_S` of them at most, with a floor per signal so a flat
signal does not make noise look large).
The **excitement** of a second is z(motion) + max(z(loudness), z(onset)), each clipped to
[0, 8]: what is seen and heard at that moment. Chat is not in it: viewers react seconds later.

A **candidate** is a second whose excitement reaches `peak_z` and is the highest within 2 s.
Its **cues**: audio (loudness or onset z >= `cue_z` within [-2, +3] s), motion (the same for
motion) and chat (a burst, chat z >= `chat_z`, starting `chat_lag_min_s` .. `chat_lag_max_s`
after the peak, not already claimed by another moment, and with no new event starting between the
peak and the burst: viewers react to the latest thing they saw). A candidate needs `min_cues` cues
(fewer when the stream has fewer modalities): a music swell is audio only, a camera pan motion
only, chat spam chat only, and none of them is a moment.

Its score is the best window score over its seconds and its chat burst, and must reach the
threshold, unless it has `sure_cues` cues (default 3: sound, motion and chat's reaction all
there), which make it a moment whatever the windows scored: a moment across a window edge
splits its evidence between two windows, and its chat reaction may fall in a third.

Candidates are taken from the most excited down. A moment's **bounds** are where its excitement
stays at or above `edge` x the peak's, or `edge_max_z` (one lower second may sit inside), at most `max_moment_s`
long; a candidate inside an earlier moment's bounds is part of it, so two moments are never
merged unless they overlap. The chat burst it claims is lifted off for the others, so one
reaction lifts one moment: the one it follows, not the next.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

SIGNALS = {"audio.loudness_s": "loudness", "audio.onset_s": "onset", "vision.motion_s": "motion", "chat.chat_messages_s": "chat"}
MODALITY_OF = {"loudness": "audio", "onset": "audio", "motion": "vision", "chat": "chat"}
FLOORS = {"loudness": 1.5, "onset": 1.5, "motion": 0.3, "chat": 0.7}  # smallest MAD-scale per signal
_KEY = re.compile(r"^(audio\.loudness_s|audio\.onset_s|vision\.motion_s|chat\.chat_messages_s)(\d+)$")
Z_CAP = 8.0
BASELINE_S = 600  # seconds of history the tracker keeps for the baseline


@dataclass(frozen=True)
class MomentConfig:
    peak_z: float = 3.0
    cue_z: float = 2.0
    chat_z: float = 2.5
    chat_lag_min_s: float = 1.0
    chat_lag_max_s: float = 12.0  # above the p95 of the lag estimated on the tune streams (10.35 s); p5 is 1.65 s
    min_cues: int = 2
    edge: float = 0.35
    edge_max_z: float = 2.0  # a second at this excitement always belongs to the moment around it
    max_moment_s: float = 30.0
    sure_cues: int = 3  # a moment with this many cues (sound, motion and chat's reaction) needs no window score

    def __post_init__(self) -> None:
        if not (0 <= self.chat_lag_min_s <= self.chat_lag_max_s and self.min_cues >= 1 and 0 < self.edge < 1 and self.max_moment_s >= 1):
            raise ValueError(f"invalid moment settings: {self}")


@dataclass(frozen=True)
class Moment:
    peak_s: int
    start_s: int
    end_s: int  # exclusive: the moment covers seconds start_s .. end_s - 1
    excitement: float
    cues: tuple[str, ...]  # "audio", "motion", "chat"
    chat_start_s: int | None = None  # first second of the chat burst it claimed
    detail: dict = field(default_factory=dict, compare=False)  # figures for the reason

    @property
    def chat_lag_s(self) -> float:
        return float(self.chat_start_s - self.peak_s) if self.chat_start_s is not None else 0.0


@dataclass
class Series:
    """Per-second values of one stream, filled window by window."""

    values: dict[str, dict[int, float]] = field(default_factory=lambda: {s: {} for s in set(SIGNALS.values())})

    def add(self, start_s: float, features: Mapping[str, float]) -> bool:
        """A scored window's features; True when it held any per-second value."""
        base = int(round(start_s))
        found = False
        for name, value in features.items():
            m = _KEY.match(name)
            if m is None or not math.isfinite(value):
                continue
            self.values[SIGNALS[m.group(1)]][base + int(m.group(2))] = float(value)
            found = True
        return found

    def prune(self, before: int) -> None:
        """Forget seconds before `before` (the baseline then covers what is left: memory stays flat)."""
        for values in self.values.values():
            for t in [t for t in values if t < before]:
                del values[t]

    def has(self, signal: str) -> bool:
        return bool(self.values[signal])

    def modalities(self) -> set[str]:
        return {MODALITY_OF[s] for s, v in self.values.items() if v}

    def covers(self, second: int) -> bool:
        """Whether audio or vision has a value for this second."""
        return any(second in self.values[s] for s in ("loudness", "onset", "motion"))

    def stats(self, signal: str) -> tuple[float, float]:
        """(median, scale) of a signal over every second seen."""
        v = np.fromiter(self.values[signal].values(), dtype=np.float64)
        if v.size == 0:
            return 0.0, 1.0
        med = float(np.median(v))
        scale = max(1.4826 * float(np.median(np.abs(v - med))), FLOORS[signal])
        if signal == "chat":  # counts: at least the Poisson spread, and bursts early in a stream must not swamp it
            poisson = math.sqrt(max(med, 0.0))
            scale = max(min(scale, 1.5 * poisson), poisson, FLOORS[signal])
        return med, scale


class Curves:
    """z-scores and excitement of a Series, frozen at one moment of the stream."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self._stats = {s: series.stats(s) for s in series.values}

    def raw(self, signal: str, t: int) -> float | None:
        return self.series.values[signal].get(t)

    def z(self, signal: str, t: int) -> float:
        v = self.series.values[signal].get(t)
        if v is None:
            return 0.0
        med, scale = self._stats[signal]
        return min(max((v - med) / scale, 0.0), Z_CAP)

    def audio(self, t: int) -> float:
        return max(self.z("loudness", t), self.z("onset", t))

    def excitement(self, t: int) -> float:
        return self.z("motion", t) + self.audio(t)

    def median(self, signal: str) -> float:
        return self._stats[signal][0]


def find(series: Series, lo: int, hi: int, score_at: Callable[[int], float | None], threshold: float, config: MomentConfig,
         taken: Iterable[tuple[int, int]] = (), claimed: set[int] | None = None, data_end: int | None = None) -> list[Moment]:
    """Moments whose peak lies in seconds [lo, hi), in time order.

    `score_at(second)` is the window score of the window holding that second (None: not scored);
    a moment's score is the best over its seconds and its chat burst, and must reach `threshold`.
    `taken` are earlier moments' bounds (never overlapped), `claimed` the chat seconds they took
    (updated in place), `data_end` the first second with no data yet (bounds stop there)."""
    claimed = claimed if claimed is not None else set()
    taken = list(taken)
    curves = Curves(series)
    end = data_end if data_end is not None else hi
    available = {"audio", "vision", "chat"} & series.modalities()
    need = max(1, min(config.min_cues, len(available)))
    candidates = []
    for t in range(lo, hi):
        e = curves.excitement(t)
        if e < config.peak_z:
            continue
        around = [curves.excitement(u) for u in range(t - 2, t + 3)]
        if e < max(around) or any(curves.excitement(u) >= e for u in range(t - 2, t)):
            continue  # not the (first) highest within 2 s
        candidates.append((-e, t))
    out: list[Moment] = []
    for neg_e, t in sorted(candidates):
        if any(a <= t < b for a, b in taken):
            continue  # inside an earlier moment: part of it
        cues = []
        if any(curves.audio(u) >= config.cue_z for u in range(t - 2, t + 4)):
            cues.append("audio")
        if any(curves.z("motion", u) >= config.cue_z for u in range(t - 2, t + 4)):
            cues.append("motion")
        burst = _chat_burst(curves, t, config, claimed)
        if burst is not None and _newer_onset(curves, t, burst[0], config):
            burst = None  # viewers react to the latest thing they saw: a new event began before the burst
        if burst is not None:
            cues.append("chat")
        if len(cues) < need:
            continue
        start, stop = _bounds(curves, t, -neg_e, config, taken, end)
        seconds = list(range(start, stop)) + ([burst[0]] if burst else [])
        scores = [s for s in (score_at(u) for u in seconds) if s is not None]
        if not scores or (max(scores) < threshold and len(cues) < config.sure_cues):
            continue
        if burst is not None:
            claimed.update(range(burst[0], burst[1]))
        taken.append((start, stop))
        out.append(Moment(t, start, stop, -neg_e, tuple(cues), burst[0] if burst else None,
                          _detail(curves, t, start, stop, burst, max(scores))))
    return sorted(out, key=lambda m: m.peak_s)


def _chat_burst(curves: Curves, t: int, config: MomentConfig, claimed: set[int]) -> tuple[int, int] | None:
    """(first, end) seconds of the chat burst that follows a peak at t, or None."""
    lo, hi = t + int(math.floor(config.chat_lag_min_s)), t + int(math.ceil(config.chat_lag_max_s))
    for u in range(lo, hi + 1):
        if curves.z("chat", u) < config.chat_z or any(v in claimed for v in range(u - 3, u + 1)):
            continue  # quiet, or the rest of a burst another moment claimed
        first = u
        while first - 1 >= lo and first - 1 not in claimed and curves.z("chat", first - 1) >= config.chat_z / 2:
            first -= 1  # where the rise began
        stop = u + 1
        while curves.z("chat", stop) >= config.chat_z / 2 and stop - first < 15:
            stop += 1
        return first, stop
    return None


def _newer_onset(curves: Curves, t: int, burst: int, config: MomentConfig) -> bool:
    """Whether another event starts between the peak at t and the chat burst: a second past the
    peak's own stretch where the excitement jumps from below half `peak_z` to at least `peak_z`."""
    for p in range(t + 1, burst):
        if curves.excitement(p) >= config.peak_z and curves.excitement(p - 1) < config.peak_z / 2:
            return True
    return False


def _bounds(curves: Curves, t: int, peak: float, config: MomentConfig, taken: list[tuple[int, int]], data_end: int) -> tuple[int, int]:
    level = min(config.edge * peak, config.edge_max_z)
    floor = max([b for a, b in taken if b <= t] + [0])
    ceiling = min([a for a, b in taken if a > t] + [data_end])
    limit = int(config.max_moment_s)
    start = t
    while start - 1 >= floor and t - start + 1 < limit and _keeps(curves, start - 1, -1, level, floor):
        start -= 1
    stop = t + 1
    while stop < ceiling and stop - start < limit and _keeps(curves, stop, 1, level, ceiling - 1):
        stop += 1
    return start, stop


def _keeps(curves: Curves, u: int, step: int, level: float, bound: int) -> bool:
    """Second u belongs to the moment: at the level, or one low second before one that is."""
    if curves.excitement(u) >= level:
        return True
    nxt = u + step
    return (nxt >= bound if step < 0 else nxt <= bound) and curves.excitement(nxt) >= level and curves.series.covers(nxt)


def _detail(curves: Curves, t: int, start: int, stop: int, burst: tuple[int, int] | None, score: float) -> dict:
    near = range(max(start, t - 2), min(stop, t + 4)) or range(t, t + 1)
    d: dict = {"score": score}
    loud = [curves.raw("loudness", u) for u in near if curves.raw("loudness", u) is not None]
    if loud:
        d["loudness_rise_lu"] = max(loud) - curves.median("loudness")
    motion = [curves.raw("motion", u) for u in range(start, stop) if curves.raw("motion", u) is not None]
    if motion:
        d["motion_ratio"] = max(motion) / max(curves.median("motion"), 0.1)
    if burst is not None:
        rates = [curves.raw("chat", u) or 0.0 for u in range(*burst)]
        d["chat_ratio"] = max(rates) / max(curves.median("chat"), 0.25)
        d["chat_lag_s"] = burst[0] - t
    return d
