"""Per-stream chat aggregation: 10 s feature windows and the 30 s sentiment series.

Feed messages (any order within the open windows) with `add` / `add_batch`, then call
`advance(watermark)` with the media time up to which chat is complete; it returns every
window and interval that ended at or before the watermark, empty ones included, each
exactly once. A message older than an already-closed window is counted in
`late_messages` (never silently dropped) but not added, since that window's record was
published already. `finish(end_s)` closes the rest at the media's end (the last window
and interval may be partial). A live reader that joins mid-stream passes `start_s`, so
windows before it are not reported as empty.

Window features (`dict[str, float]`, window i covers media seconds [10i, 10i+10)):

| name | unit / meaning |
| --- | --- |
| `chat_messages` | messages in the window (count) |
| `chat_unique_chatters` | distinct users in the window (count) |
| `chat_positive` | messages with compound >= 0.05 (count) |
| `chat_negative` | messages with compound <= -0.05 (count) |
| `chat_mean_compound` | copypasta-weighted mean VADER compound, -1..1 (0 when empty) |
| `chat_rate_z` | message count as a z-score against this stream's earlier windows (0 for the first 3) |
| `chat_emote_<class>` | emote/slang occurrences of that class (each distinct emote at most 3 per message) |
| `chat_messages_s0` .. `chat_messages_s9` | messages in second k of the window, [10i+k, 10i+k+1) |
| `chat_duplicate_ratio` | share of messages whose folded text was seen in the `copypasta_span_s` before |
| `chat_emote_density` | emote tokens per message (0 when empty) |
| `chat_mean_length` | characters per message (0 when empty) |
| `chat_copypasta_share` | share of messages of >= 6 words that are at least the 3rd copy within the span |

Copypasta: a text (case and spacing folded) seen n times within `copypasta_span_s` gets
weight 1/n in the mean compound; counts are never reduced. The burst features (the last
four rows) follow the reaction literature; they are causal: a message is a duplicate or
copy-pasta by what came before it, never by what follows.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.chat.message import ChatMessage
from services.chat.sentiment import NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD, ChatSentiment
from streamsight.windows import DEFAULT_WINDOW_S

WINDOW_S = DEFAULT_WINDOW_S  # the platform's window_s is passed in by the service
INTERVAL_S = 30.0
RATE_Z_MIN_WINDOWS = 3
SECOND_BINS = 10  # chat_messages_s0..s9; with another window_s the seconds past the 10th fall in s9
COPYPASTA_MIN_WORDS = 6
COPYPASTA_MIN_COPIES = 3
INTERVAL_PARTS = 3  # an interval's message counts per third (10 s of 30 s): the forecast's view of its tail


def feature_names(classes: Iterable[str]) -> tuple[str, ...]:
    """Every key of a window's feature dict, in a stable order."""
    return (
        "chat_messages",
        "chat_unique_chatters",
        "chat_positive",
        "chat_negative",
        "chat_mean_compound",
        "chat_rate_z",
        *(f"chat_emote_{c}" for c in classes),
        *(f"chat_messages_s{k}" for k in range(SECOND_BINS)),
        "chat_duplicate_ratio",
        "chat_emote_density",
        "chat_mean_length",
        "chat_copypasta_share",
    )


@dataclass(slots=True)
class _Bucket:
    count: int = 0
    positive: int = 0
    negative: int = 0
    weighted_sum: float = 0.0
    weight: float = 0.0
    users: set[str] = field(default_factory=set)
    emotes: dict[str, int] = field(default_factory=dict)
    seconds: list[int] = field(default_factory=lambda: [0] * SECOND_BINS)
    duplicates: int = 0
    emote_tokens: int = 0
    chars: int = 0
    copypasta: int = 0
    parts: list[int] = field(default_factory=lambda: [0] * INTERVAL_PARTS)

    def mean(self) -> float:
        return self.weighted_sum / self.weight if self.weight > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One 30 s interval of the sentiment series: index j covers [30j, 30j+30)."""

    index: int
    start_s: float
    mean_compound: float
    messages: int
    emote_density: float = 0.0  # emote tokens per message (the forecast's exogenous input)
    parts: tuple[int, ...] = ()  # messages per third of the interval (INTERVAL_PARTS), oldest first

    def inputs(self) -> tuple[float, int, float, tuple[int, ...]]:
        """What the forecaster takes per interval (`forecast.StreamForecaster.update`'s arguments)."""
        return self.mean_compound, self.messages, self.emote_density, self.parts


class ChatAggregator:
    """One stream's windows and sentiment series; see the module docstring."""

    def __init__(
        self,
        scorer: ChatSentiment | None = None,
        window_s: float = WINDOW_S,
        interval_s: float = INTERVAL_S,
        copypasta_span_s: float = 30.0,
        start_s: float = 0.0,
    ) -> None:
        self.scorer = scorer or ChatSentiment()
        self.window_s = window_s
        self.interval_s = interval_s
        self.copypasta_span_s = copypasta_span_s
        self.names = feature_names(self.scorer.classes)
        self._windows: dict[int, _Bucket] = {}
        self._intervals: dict[int, _Bucket] = {}
        self._next_window = max(0, int(start_s // window_s))  # first window not yet emitted
        self._next_interval = max(0, int(start_s // interval_s))
        self._recent: dict[str, deque[float]] = {}
        self._rate_n = 0
        self._rate_mean = 0.0
        self._rate_m2 = 0.0
        self.late_messages = 0
        self.total_messages = 0
        self.after_end_messages = 0  # added, but at or after the end given to finish()

    # ------------------------------------------------------------ input

    def add(self, msg: ChatMessage) -> None:
        t = msg.media_time
        if not math.isfinite(t) or t < 0:
            self.late_messages += 1  # before the stream's start: no window can hold it
            return
        w = int(t // self.window_s)
        j = int(t // self.interval_s)
        if w < self._next_window or j < self._next_interval:
            self.late_messages += 1
            return
        self.total_messages += 1
        s = self.scorer.score(msg.text, msg.emotes)
        copies = self._copies(msg.text, t)
        weight = 1.0 / copies
        for bucket in (self._windows.setdefault(w, _Bucket()), self._intervals.setdefault(j, _Bucket())):
            bucket.count += 1
            bucket.weighted_sum += weight * s.compound
            bucket.weight += weight
            bucket.emote_tokens += s.emotes
        part = int((t - j * self.interval_s) * INTERVAL_PARTS // self.interval_s)
        self._intervals[j].parts[min(INTERVAL_PARTS - 1, max(0, part))] += 1
        win = self._windows[w]
        win.users.add(msg.user)
        win.seconds[min(SECOND_BINS - 1, max(0, int(t - w * self.window_s)))] += 1
        win.chars += len(msg.text)
        if copies > 1:
            win.duplicates += 1
            if copies >= COPYPASTA_MIN_COPIES and len(msg.text.split()) >= COPYPASTA_MIN_WORDS:
                win.copypasta += 1
        if s.compound >= POSITIVE_THRESHOLD:
            win.positive += 1
        elif s.compound <= NEGATIVE_THRESHOLD:
            win.negative += 1
        for cls, n in s.emote_classes:
            win.emotes[cls] = win.emotes.get(cls, 0) + n

    def add_batch(self, msgs: Iterable[ChatMessage]) -> None:
        msgs = self._primed(msgs)
        for m in msgs:
            self.add(m)

    def _primed(self, msgs: Iterable[ChatMessage]) -> Iterable[ChatMessage]:
        """A scorer that is faster in batches (the encoder backend) scores them up front."""
        prime = getattr(self.scorer, "prime", None)
        if prime is None:
            return msgs
        msgs = list(msgs)
        prime([(m.text, m.emotes) for m in msgs])
        return msgs

    async def add_batch_async(self, msgs: Iterable[ChatMessage], batch: int = 1000) -> None:
        """Add many messages, yielding to the event loop after every `batch`, so a flood
        keeps other tasks of the service (heartbeats, acks, other streams) running."""
        chunk: list[ChatMessage] = []
        for m in msgs:
            chunk.append(m)
            if len(chunk) == batch:
                for c in self._primed(chunk):
                    self.add(c)
                chunk = []
                await asyncio.sleep(0)
        for c in self._primed(chunk):
            self.add(c)

    def _copies(self, text: str, t: float) -> int:
        """How often this folded text was seen within the span up to `t`, this message included."""
        key = " ".join(text.lower().split())
        times = self._recent.get(key)
        if times is None:
            times = self._recent[key] = deque()
        while times and times[0] < t - self.copypasta_span_s:
            times.popleft()
        times.append(t)
        if len(self._recent) > 50_000:  # forget texts that have gone quiet
            self._recent = {k: v for k, v in self._recent.items() if v and v[-1] >= t - self.copypasta_span_s}
        return len(times)

    # ------------------------------------------------------------ output

    def advance(self, watermark: float) -> tuple[list[tuple[int, dict[str, float]]], list[SeriesPoint]]:
        """Close every window and interval that ends at or before `watermark` (media s)."""
        windows: list[tuple[int, dict[str, float]]] = []
        while (self._next_window + 1) * self.window_s <= watermark:
            windows.append(self._close_window())
        points: list[SeriesPoint] = []
        while (self._next_interval + 1) * self.interval_s <= watermark:
            points.append(self._close_interval())
        return windows, points

    def finish(self, end_s: float) -> tuple[list[tuple[int, dict[str, float]]], list[SeriesPoint]]:
        """Close every window and interval that starts before `end_s` (the media's end), the
        last ones possibly partial. Messages in windows past the end are counted in
        `after_end_messages` and dropped: no window of the stream holds them. (Buckets are
        per window and interval, so the caller keeps messages at or after `end_s` out of the
        last ones; the service feeds a replay only up to the end.)"""
        # The tolerance keeps an end of 650.0000001 s from opening a window 65.
        n_windows = math.ceil(end_s / self.window_s - 1e-6)
        n_intervals = math.ceil(end_s / self.interval_s - 1e-6)
        windows: list[tuple[int, dict[str, float]]] = []
        while self._next_window < n_windows:
            windows.append(self._close_window())
        points: list[SeriesPoint] = []
        while self._next_interval < n_intervals:
            points.append(self._close_interval())
        self.after_end_messages += sum(b.count for b in self._windows.values())
        self._windows.clear()
        self._intervals.clear()
        return windows, points

    def _close_window(self) -> tuple[int, dict[str, float]]:
        i = self._next_window
        self._next_window += 1
        return i, self._features(self._windows.pop(i, _Bucket()))

    def _close_interval(self) -> SeriesPoint:
        j = self._next_interval
        self._next_interval += 1
        b = self._intervals.pop(j, _Bucket())
        density = round(b.emote_tokens / b.count, 6) if b.count else 0.0
        return SeriesPoint(j, j * self.interval_s, round(b.mean(), 6), b.count, density, tuple(b.parts))

    def flush(self) -> tuple[list[tuple[int, dict[str, float]]], list[SeriesPoint]]:
        """Close everything that has messages (end of a replay or stream)."""
        last = max([*self._windows, -1])
        last_j = max([*self._intervals, -1])
        end = max((last + 1) * self.window_s, (last_j + 1) * self.interval_s)
        return self.advance(end)

    def _features(self, b: _Bucket) -> dict[str, float]:
        z = 0.0
        if self._rate_n >= RATE_Z_MIN_WINDOWS:
            std = math.sqrt(self._rate_m2 / (self._rate_n - 1))
            z = (b.count - self._rate_mean) / max(std, 1.0)  # floor: a flat baseline is not infinitely surprising
        # Welford's running mean/variance of the per-window count (the stream's baseline).
        self._rate_n += 1
        delta = b.count - self._rate_mean
        self._rate_mean += delta / self._rate_n
        self._rate_m2 += delta * (b.count - self._rate_mean)
        out = {
            "chat_messages": float(b.count),
            "chat_unique_chatters": float(len(b.users)),
            "chat_positive": float(b.positive),
            "chat_negative": float(b.negative),
            "chat_mean_compound": round(b.mean(), 6),
            "chat_rate_z": round(z, 6),
        }
        for cls in self.scorer.classes:
            out[f"chat_emote_{cls}"] = float(b.emotes.get(cls, 0))
        for k, n in enumerate(b.seconds):
            out[f"chat_messages_s{k}"] = float(n)
        per = 1.0 / b.count if b.count else 0.0
        out["chat_duplicate_ratio"] = round(b.duplicates * per, 6)
        out["chat_emote_density"] = round(b.emote_tokens * per, 6)
        out["chat_mean_length"] = round(b.chars * per, 6)
        out["chat_copypasta_share"] = round(b.copypasta * per, 6)
        return out


def series_from_messages(msgs: Iterable[ChatMessage], scorer: ChatSentiment | None = None) -> list[SeriesPoint]:
    """The 30 s sentiment series of a whole log (used by training, backtest and bench)."""
    agg = ChatAggregator(scorer)
    agg.add_batch(sorted(msgs, key=lambda m: m.media_time))
    _, points = agg.flush()
    return points
