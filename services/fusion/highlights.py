"""Highlight decisions for one stream: a threshold plus non-maximum suppression over neighbouring windows.

Scores are taken in window order (a window scored early waits for its predecessors), so the
decisions are the same whatever order the windows were scored in, and a restart that replays
the stored scores makes the same highlights with the same numbers.

A **run** is a stretch of windows at or above `threshold`, where up to `merge_gap` low windows
between two high ones do not break it (one moment whose score dips for a window). A run
becomes one highlight from its first to its last high window. A run longer than
`max_windows` is cut by non-maximum suppression: the highest window takes up to
`max_windows` windows around it (growing toward the higher neighbour), those are suppressed,
and the next highest remaining window does the same, until no high window is left.
Highlight n of a stream (0, 1, ...) is numbered in the order the highlights are decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HighlightConfig:
    threshold: float = 0.5
    merge_gap: int = 1  # low windows allowed inside a run
    max_windows: int = 6  # longest highlight, in windows
    lead_in_s: float = 3.0  # clip starts this long before the highlight
    tail_s: float = 2.0  # and ends this long after it

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1 or self.merge_gap < 0 or self.max_windows < 1 or self.lead_in_s < 0 or self.tail_s < 0:
            raise ValueError(f"invalid highlight settings: {self}")


@dataclass(frozen=True)
class ScoredWindow:
    window: int
    start_s: float
    end_s: float
    score: float
    why: tuple = ()  # top contributions of this window (opaque here)
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class HighlightSpan:
    number: int
    windows: tuple[int, ...]
    start_s: float
    end_s: float
    score: float
    best: ScoredWindow
    missing: tuple[str, ...]

    def clip_range(self, config: HighlightConfig, media_end: float | None = None) -> tuple[float, float]:
        """Clip span with lead-in and tail, kept inside [0, media_end]."""
        start = max(0.0, self.start_s - config.lead_in_s)
        end = self.end_s + config.tail_s
        if media_end is not None and media_end > start:
            end = min(end, media_end)
        return start, end


@dataclass
class HighlightTracker:
    config: HighlightConfig = field(default_factory=HighlightConfig)
    next_window: int = 0  # first window not yet taken in order

    def __post_init__(self) -> None:
        self._pending: dict[int, ScoredWindow] = {}
        self._run: list[ScoredWindow] = []  # high windows and the low ones between them
        self._emitted = 0

    @property
    def emitted(self) -> int:
        return self._emitted

    def add(self, scored: ScoredWindow) -> list[HighlightSpan]:
        """A window's score; returns the highlights it completes."""
        if scored.window < self.next_window or scored.window in self._pending:
            return []  # already taken: a duplicate
        self._pending[scored.window] = scored
        out: list[HighlightSpan] = []
        while self.next_window in self._pending:
            out += self._take(self._pending.pop(self.next_window))
            self.next_window += 1
        return out

    def finish(self) -> list[HighlightSpan]:
        """The stream ended: take what is pending (gaps skipped) and close the open run."""
        out: list[HighlightSpan] = []
        for w in sorted(self._pending):
            out += self._take(self._pending.pop(w))
            self.next_window = w + 1
        out += self._close()
        return out

    def _take(self, s: ScoredWindow) -> list[HighlightSpan]:
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
            missing = tuple(sorted({m for w in part for m in w.missing}))
            out.append(HighlightSpan(self._emitted, tuple(w.window for w in part), part[0].start_s, part[-1].end_s, best.score, best, missing))
            self._emitted += 1
        return out


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
