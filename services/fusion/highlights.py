"""Highlight decisions for one stream: one highlight per moment, found at 1 s inside and around the
windows the model scores high.

Scores are taken in window order (a window scored early waits for its predecessors), so the
decisions are the same whatever order the windows were scored in, and a restart that replays
the stored scores makes the same highlights with the same numbers.

**Moments** (`moments.py`): the windows' per-second values (loudness, onsets, motion, chat rate)
give each second an excitement; a moment is a peak with at least two cues (sound, motion, a chat
burst 1-11 s later), its bounds where the excitement falls off, and its score the best window
score over its seconds and its chat burst (at or above `threshold`). Two moments are never
merged unless they overlap. A peak is decided once the data `wait_s` past it is in (the chat
reaction it may have): for a file the chat lag's whole range, for a live stream at most the
live wait; `latency_s` says what that wait cost each highlight.

**Windows without per-second values** (records of older analysers): the former rule. A run is
a stretch of windows at or above `threshold`, where up to `merge_gap` low windows between two
high ones do not break it; it becomes one highlight from its first to its last high window; a
run longer than `max_windows` is cut by non-maximum suppression around its peaks.

Every highlight has a rank among the stream's highlights decided so far (1 = best score), a
short reason, and whether a glitch (video corruption) overlaps it: such a moment is suppressed
unless `glitch_policy` is "mark". The service feeds it stream-health faults too: black, freeze,
silence and audio gaps as glitches, loudness and A/V drift as marks only. Highlight n of a stream (0, 1, ...) is numbered in the order
the highlights are decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .moments import BASELINE_S, Moment, MomentConfig, Series, find

GLITCH_POLICIES = ("suppress", "mark")


NO_CHAT_WAIT_S = 3.0  # a live stream without chat: past a peak, the seconds that show whether the moment goes on


@dataclass(frozen=True)
class HighlightConfig:
    threshold: float = 0.5
    merge_gap: int = 1  # windows without 1 s values: low windows allowed inside a run
    max_windows: int = 6  # windows without 1 s values: longest highlight, in windows
    lead_in_s: float = 3.0  # clip starts this long before the highlight
    tail_s: float = 2.0  # and ends this long after it
    min_clip_s: float = 8.0  # a clip is at least this long (widened around the moment)
    max_clip_s: float = 45.0  # and at most this long (cut after the peak)
    live_wait_s: float = 10.0  # live: longest wait past a peak for chat's reaction, media seconds
    glitch_policy: str = "suppress"  # a moment overlapping a glitch: "suppress" or "mark"
    moments: MomentConfig = field(default_factory=MomentConfig)

    def __post_init__(self) -> None:
        if (not 0 < self.threshold < 1 or self.merge_gap < 0 or self.max_windows < 1 or self.lead_in_s < 0 or self.tail_s < 0
                or not 0 < self.min_clip_s <= self.max_clip_s or self.live_wait_s < 0 or self.glitch_policy not in GLITCH_POLICIES):
            raise ValueError(f"invalid highlight settings: {self}")

    def wait_s(self, live: bool, chat: bool = True) -> float:
        """Media seconds past a peak its decision waits for: the chat lag's range (and the
        burst's first seconds) for a file; bounded by `live_wait_s` for a live stream, and for a
        live stream started without chat only the burst's seconds (no reaction will come)."""
        full = self.moments.chat_lag_max_s + 3.0
        if not live:
            return full
        return min(full if chat else NO_CHAT_WAIT_S, self.live_wait_s)


@dataclass(frozen=True)
class ScoredWindow:
    window: int
    start_s: float
    end_s: float
    score: float
    why: tuple = ()  # top contributions of this window (opaque here)
    missing: tuple[str, ...] = ()
    features: Mapping[str, float] = field(default_factory=dict, compare=False)  # every value that arrived


@dataclass(frozen=True)
class HighlightSpan:
    number: int
    windows: tuple[int, ...]
    start_s: float
    end_s: float
    score: float
    best: ScoredWindow
    missing: tuple[str, ...]
    peak_s: float = 0.0
    rank: int = 1
    reason: str = ""
    chat_lag_s: float = 0.0
    latency_s: float = 0.0
    wait_s: float = 0.0
    glitch: bool = False
    resolution: str = "windows"

    def clip_range(self, config: HighlightConfig, media_end: float | None = None) -> tuple[float, float]:
        """Clip span with lead-in and tail, between min_clip_s and max_clip_s, kept inside [0, media_end]."""
        start = self.start_s - config.lead_in_s
        end = self.end_s + config.tail_s
        if end - start < config.min_clip_s:
            pad = (config.min_clip_s - (end - start)) / 2
            start, end = start - pad, end + pad
        if end - start > config.max_clip_s:
            end = start + config.max_clip_s
        if start < 0:
            start, end = 0.0, max(end, min(config.min_clip_s, config.max_clip_s))
        if media_end is not None and media_end > start:
            end = min(end, media_end)
        return start, end


@dataclass
class HighlightTracker:
    config: HighlightConfig = field(default_factory=HighlightConfig)
    next_window: int = 0  # first window not yet taken in order
    live: bool = False  # set once the stream is known to be live: bounds the wait for chat
    chat: bool = True  # False once the stream declared it has no chat: a live one does not wait for it

    def __post_init__(self) -> None:
        self._pending: dict[int, ScoredWindow] = {}
        self._run: list[ScoredWindow] = []  # windows without 1 s values: high windows and the low ones between them
        self._emitted = 0
        self._scores: list[float] = []  # of the highlights emitted, for their ranks
        self._windows: dict[int, ScoredWindow] = {}
        self._second_window: dict[int, int] = {}  # second of media time -> the window holding it
        self._series = Series()
        self._decided = 0  # seconds before this are decided
        self._horizon = 0  # first second with no data
        self._taken: list[tuple[int, int]] = []
        self._claimed: set[int] = set()
        self._glitches: list[tuple[float, float]] = []
        self._marks: list[tuple[float, float]] = []  # spans that only mark a moment, never suppress it
        self.suppressed = 0  # moments not emitted because a glitch overlaps them

    @property
    def emitted(self) -> int:
        """Highlights decided (numbers given), suppressed ones included."""
        return self._emitted

    @property
    def wait_s(self) -> float:
        return self.config.wait_s(self.live, self.chat)

    def glitch(self, start_s: float, end_s: float, mark_only: bool = False) -> None:
        """A glitch (video corruption, or a health fault as bad: black, freeze, silence, an audio gap)
        in [start_s, end_s]: a moment overlapping it is suppressed or marked (glitch_policy). With
        `mark_only` (e.g. a loudness fault) an overlapping moment is marked, never suppressed."""
        spans = self._marks if mark_only else self._glitches
        if (start_s, end_s) not in spans:
            spans.append((start_s, end_s))

    def add(self, scored: ScoredWindow) -> list[HighlightSpan]:
        """A window's score; returns the highlights it completes."""
        if scored.window < self.next_window or scored.window in self._pending:
            return []  # already taken: a duplicate
        self._pending[scored.window] = scored
        out: list[HighlightSpan] = []
        while self.next_window in self._pending:
            out += self._take(self._pending.pop(self.next_window))
            self.next_window += 1
        out += self._decide(final=False)
        return out

    def finish(self) -> list[HighlightSpan]:
        """The stream ended: take what is pending (gaps skipped) and decide the rest."""
        out: list[HighlightSpan] = []
        for w in sorted(self._pending):
            out += self._take(self._pending.pop(w))
            self.next_window = w + 1
        out += self._decide(final=True)
        out += self._close()
        return out

    # -- moments -------------------------------------------------------------------------

    def _score_at(self, second: int) -> float | None:
        w = self._window_of(second)
        return w.score if w is not None else None

    def _window_of(self, second: int) -> ScoredWindow | None:
        i = self._second_window.get(second)
        return self._windows.get(i) if i is not None else None

    def _decide(self, final: bool) -> list[HighlightSpan]:
        limit = self._horizon if final else int(math.floor(self._horizon - self.wait_s))
        if limit <= self._decided:
            return []
        moments = find(self._series, self._decided, limit, self._score_at, self.config.threshold, self.config.moments,
                       self._taken, self._claimed, self._horizon)
        self._decided = limit
        self._forget(limit)
        out = []
        for m in moments:
            self._taken.append((m.start_s, m.end_s))
            span = self._moment_span(m)
            if span is not None:
                out.append(span)
        return out

    def _moment_span(self, m: Moment) -> HighlightSpan | None:
        glitch = any(a < m.end_s and m.start_s < b + 1 for a, b in self._glitches)
        if glitch and self.config.glitch_policy == "suppress":
            self.suppressed += 1
            self._emitted += 1  # its number stays taken, so later numbers do not depend on when the glitch came
            return None
        glitch = glitch or any(a < m.end_s and m.start_s < b + 1 for a, b in self._marks)
        seconds = list(range(m.start_s, m.end_s)) + ([m.chat_start_s] if m.chat_start_s is not None else [])
        windows = sorted({w.window for w in (self._window_of(u) for u in seconds) if w is not None})
        parts = [self._windows[i] for i in windows]
        best = max(parts, key=lambda w: (w.score, -w.window))
        missing = tuple(sorted({x for w in parts for x in w.missing}))
        score = best.score
        rank = 1 + sum(1 for s in self._scores if s > score)
        self._scores.append(score)
        latency = max(0.0, float(self._horizon) - m.end_s)  # the media it waited for (whole windows come at once)
        span = HighlightSpan(self._emitted, tuple(windows), float(m.start_s), float(m.end_s), score, best, missing,
                             peak_s=float(m.peak_s), rank=rank, reason=reason(m, best), chat_lag_s=m.chat_lag_s,
                             latency_s=latency, wait_s=self.wait_s, glitch=glitch, resolution="moment")
        self._emitted += 1
        return span

    def _forget(self, decided: int) -> None:
        """Keep BASELINE_S of history for the baseline, and the windows a moment may still reach."""
        self._series.prune(decided - BASELINE_S)
        keep = decided - int(self.config.moments.max_moment_s) - 30
        for i in [i for i, w in self._windows.items() if w.end_s < keep]:
            del self._windows[i]
        for u in [u for u in self._second_window if u < keep]:
            del self._second_window[u]
        self._taken = [(a, b) for a, b in self._taken if b >= keep]
        self._claimed = {u for u in self._claimed if u >= keep}

    # -- windows -------------------------------------------------------------------------

    def _take(self, s: ScoredWindow) -> list[HighlightSpan]:
        self._windows[s.window] = s
        for u in range(int(math.floor(s.start_s)), int(math.ceil(s.end_s - 1e-6))):
            self._second_window.setdefault(u, s.window)
        if self._series.add(s.start_s, s.features):
            self._horizon = max(self._horizon, int(math.ceil(s.end_s - 1e-6)))
            s = ScoredWindow(s.window, s.start_s, s.end_s, 0.0)  # decided by moments, low for the window rule
        else:
            self._decided = max(self._decided, int(math.ceil(s.end_s - 1e-6)))
            self._horizon = max(self._horizon, self._decided)
        return self._take_window(s)

    def _take_window(self, s: ScoredWindow) -> list[HighlightSpan]:
        high = s.score >= self.config.threshold
        out: list[HighlightSpan] = []
        if self._run:
            last_high = max(w.window for w in self._run if w.score >= self.config.threshold)
            # low windows since the last high one, counting this one when it is low
            lows = s.window - last_high - (1 if high else 0)
            if lows > self.config.merge_gap:
                out += self._close()
        if high or self._run:
            self._run.append(s)
        return out

    def _close(self) -> list[HighlightSpan]:
        t = self.config.threshold
        run, self._run = self._run, []
        while run and run[-1].score < t:
            run.pop()
        if not run:
            return []
        spans = _suppress(run, t, self.config.max_windows)
        out = []
        for part in spans:
            highs = [w for w in part if w.score >= t]
            best = max(highs, key=lambda w: (w.score, -w.window))
            start, end = part[0].start_s, part[-1].end_s
            glitch = any(a < end and start < b for a, b in self._glitches)
            if glitch and self.config.glitch_policy == "suppress":
                self.suppressed += 1
                self._emitted += 1  # its number stays taken (see _moment_span)
                continue
            glitch = glitch or any(a < end and start < b for a, b in self._marks)
            missing = tuple(sorted({m for w in part for m in w.missing}))
            rank = 1 + sum(1 for s in self._scores if s > best.score)
            self._scores.append(best.score)
            out.append(HighlightSpan(self._emitted, tuple(w.window for w in part), start, end, best.score, best, missing,
                                     peak_s=(best.start_s + best.end_s) / 2, rank=rank, reason=window_reason(best), glitch=glitch))
            self._emitted += 1
        return out


def reason(m: Moment, best: ScoredWindow) -> str:
    """A short human reason, e.g. "loud sound (+18 LU) + fast motion (x4) + chat spike (x6 rate) 4 s later"."""
    d = m.detail
    parts = []
    if "audio" in m.cues:
        tag = _top_tag(best)
        parts.append(tag if tag else f"loud sound (+{d.get('loudness_rise_lu', 0.0):.0f} LU)")
    if "motion" in m.cues:
        parts.append(f"fast motion (x{d.get('motion_ratio', 1.0):.0f})")
    if "chat" in m.cues:
        parts.append(f"chat spike (x{d.get('chat_ratio', 1.0):.0f} rate) {m.chat_lag_s:.0f} s later")
    return " + ".join(parts)


def window_reason(best: ScoredWindow) -> str:
    names = [getattr(c, "feature", "") for c in best.why[:2]]
    names = [n for n in names if n]
    return f"window score {best.score:.2f}" + (f": {', '.join(names)}" if names else "")


def _top_tag(best: ScoredWindow) -> str:
    """The strongest sound tag among the best window's reasons (e.g. "laughter"), if any."""
    for c in best.why:
        name = getattr(c, "feature", "")
        if name.startswith("audio.tag_") and getattr(c, "weight", 0.0) > 0:
            return name[len("audio.tag_"):].rsplit("_", 1)[0].replace("_", " ")
    return ""


def _suppress(run: list[ScoredWindow], threshold: float, max_windows: int) -> list[list[ScoredWindow]]:
    """Non-maximum suppression inside one run; returns the kept spans in time order."""
    if len(run) <= max_windows:
        return [run]
    free = [True] * len(run)
    spans: list[tuple[int, int]] = []
    while True:
        candidates = [k for k, w in enumerate(run) if free[k] and w.score >= threshold]
        if not candidates:
            break
        peak = max(candidates, key=lambda k: (run[k].score, -k))
        lo = hi = peak
        while hi - lo + 1 < max_windows:
            left = run[lo - 1].score if lo > 0 and free[lo - 1] else None
            right = run[hi + 1].score if hi + 1 < len(run) and free[hi + 1] else None
            if left is None and right is None:
                break
            if right is None or (left is not None and left > right):
                lo -= 1
            else:
                hi += 1
        # trim low windows at the edges: a highlight starts and ends on a high window
        while run[lo].score < threshold:
            lo += 1
        while run[hi].score < threshold:
            hi -= 1
        for k in range(lo, hi + 1):
            free[k] = False
        spans.append((lo, hi))
    return [run[a : b + 1] for a, b in sorted(spans)]
