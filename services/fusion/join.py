"""Joins one stream's per-window feature records as they arrive and says when a window is ready.

Window i of a stream is scored exactly once, when the first of these holds:

* **complete**: every expected modality's record for it is in. Expected are the configured
  ones (vision and audio by default) plus chat once a chat record arrived for the stream.
  While no chat record has been seen, a complete window waits `chat_wait_s` of media time
  past its end, because the chat of a stream may be a little behind its media;
* **moved on**: every missing modality has already delivered window i + `lost_after` (the
  analysers publish in window order, so the missing record is lost);
* **deadline**: the stream's media clock is `deadline_s` past the window's end (live mode),
  or `vod_deadline_s` past it for files (0 = never; files wait for the records or the end);
* **stream end**: after the last window record or a terminal status, a window is scored once
  every missing modality has reached the last window, or once no record of the stream has
  arrived for `end_timeout_s` of wall time since the end (the service calls `touch` on each
  record and `expire` now and then): analysers that lag keep the stream open while they deliver,
  one that has nothing for the last windows (no frames in a short tail) does not hold it.

The media clock is the largest media time seen: window record ends and record ends.
Missing modalities are imputed by the model and listed in `ReadyWindow.missing`. Records for
a scored window (late or duplicated by a redelivery) are ignored and counted.
Plain Python, no NATS: the service feeds it and persists what it needs (see `snapshot`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WINDOW_S = 10.0
MODALITIES = ("vision", "audio", "chat")


@dataclass(frozen=True)
class JoinConfig:
    expected: frozenset[str] = frozenset({"vision", "audio"})
    deadline_s: float = 15.0  # live: media seconds past a window's end
    vod_deadline_s: float = 180.0  # files: 0 = none (analysers may be a minute of media behind ingest)
    chat_wait_s: float = 20.0  # media seconds a complete window waits for a first chat record
    lost_after: int = 2  # a modality at window i + lost_after will not deliver window i
    end_timeout_s: float = 10.0  # wall seconds without records after the stream's end before the rest is scored

    def __post_init__(self) -> None:
        unknown = set(self.expected) - set(MODALITIES)
        if unknown or not self.expected:
            raise ValueError(f"expected modalities must be a non-empty subset of {MODALITIES}, got {sorted(self.expected)}")
        if self.deadline_s <= 0 or self.vod_deadline_s < 0 or self.chat_wait_s < 0 or self.lost_after < 1 or self.end_timeout_s < 0:
            raise ValueError(f"invalid join settings: {self}")


@dataclass(frozen=True)
class Part:
    """One modality's record of one window."""

    modality: str
    window: int
    start_s: float
    end_s: float
    values: dict[str, float]
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadyWindow:
    """A window to score now: what arrived, what is missing, and why it is scored now."""

    window: int
    start_s: float
    end_s: float
    parts: dict[str, Part]
    missing: list[str]
    reason: str  # complete, moved_on, deadline, stream_end, end_timeout

    def features(self) -> dict[str, float]:
        """Fused feature values, named "<modality>.<feature>"."""
        return {f"{m}.{k}": v for m, part in sorted(self.parts.items()) for k, v in part.values.items()}


@dataclass
class StreamJoin:
    stream_id: str
    config: JoinConfig = field(default_factory=JoinConfig)
    live: bool = False
    chat_seen: bool = False
    clock: float = 0.0  # media clock, seconds
    last_window: int | None = None  # index of the stream's last window, once known
    last_end: float | None = None
    ended: bool = False
    ended_at: float | None = None  # wall (monotonic) time the end became known
    last_activity: float = 0.0  # wall (monotonic) time of the latest record
    duplicates: int = 0
    late: int = 0

    def __post_init__(self) -> None:
        self._parts: dict[int, dict[str, Part]] = {}
        self._known: dict[int, tuple[float, float]] = {}  # window records: index -> (start, end)
        self._scored: set[int] = set()
        self._reached: dict[str, int] = {}  # modality -> highest window delivered

    # -- input ---------------------------------------------------------------------------
    @property
    def expected(self) -> set[str]:
        return set(self.config.expected) | ({"chat"} if self.chat_seen else set())

    def is_scored(self, window: int) -> bool:
        return window in self._scored

    def has(self, window: int, modality: str) -> bool:
        return modality in self._parts.get(window, {})

    @property
    def known_windows(self) -> list[int]:
        """Windows ingest reported (window records)."""
        return sorted(self._known)

    def restore(self, known: int, last_window: int | None, last_end: float | None, clock: float, ended: bool, now: float) -> None:
        """Saved stream facts after a restart (windows 0..known reported); decides nothing: call `ready`."""
        for i in range(known + 1):
            self._known.setdefault(i, (i * WINDOW_S, (i + 1) * WINDOW_S))
        if last_window is not None:
            self.last_window, self.last_end = last_window, last_end
            self._known[last_window] = (last_window * WINDOW_S, last_end if last_end is not None else (last_window + 1) * WINDOW_S)
        self.clock = max(self.clock, clock)
        if ended:
            self.ended, self.ended_at = True, now

    def add(self, part: Part) -> list[ReadyWindow]:
        """A modality's record arrived; returns the windows that became ready."""
        if part.modality not in MODALITIES:
            raise ValueError(f"unknown modality {part.modality!r}")
        if part.window < 0 or not (math.isfinite(part.start_s) and math.isfinite(part.end_s)):
            raise ValueError(f"window {part.window} [{part.start_s}, {part.end_s}] is not a valid window")
        if part.modality == "chat":
            self.chat_seen = True
        self._reached[part.modality] = max(self._reached.get(part.modality, -1), part.window)
        self.clock = max(self.clock, part.end_s)
        if part.window in self._scored:
            self.late += 1
            return self.ready()
        slot = self._parts.setdefault(part.window, {})
        if part.modality in slot:
            self.duplicates += 1
        else:
            slot[part.modality] = part
        return self.ready()

    def media_window(self, index: int, start_s: float, end_s: float, last: bool = False) -> list[ReadyWindow]:
        """Ingest's window record: the media clock, the window's span, and the stream's end."""
        self._known[index] = (start_s, end_s)
        self.clock = max(self.clock, end_s)
        if last:
            self.last_window, self.last_end = index, end_s
        return self.ready()

    def end(self, media_time_s: float, now: float) -> list[ReadyWindow]:
        """The stream ended (last window record seen, or a terminal status)."""
        if not self.ended:
            self.ended, self.ended_at = True, now
        if self.last_window is None:
            seen = list(self._known) + list(self._parts) + list(self._scored)
            if media_time_s > 0:
                seen.append(max(0, math.ceil(media_time_s / WINDOW_S - 1e-6) - 1))
            if seen:
                self.last_window = max(seen)
                self.last_end = media_time_s if media_time_s > self.last_window * WINDOW_S else None
        self.clock = max(self.clock, media_time_s)
        return self.ready()

    def touch(self, now: float) -> None:
        """A record of this stream arrived at wall (monotonic) time `now`."""
        self.last_activity = max(self.last_activity, now)

    def expire(self, now: float) -> list[ReadyWindow]:
        """Wall-clock check after the end: idle for `end_timeout_s`, score whatever is there."""
        if self.ended and self.ended_at is not None and now - max(self.ended_at, self.last_activity) >= self.config.end_timeout_s:
            return self.ready(force=True)
        return []

    def mark_scored(self, window: int) -> None:
        """Restored state: this window was scored before a restart."""
        self._scored.add(window)
        self._parts.pop(window, None)

    @property
    def finished(self) -> bool:
        """Ended and every window up to the last scored: the stream's state can go."""
        if not self.ended or self.last_window is None:
            return self.ended and not self._parts
        return all(i in self._scored for i in range(self.last_window + 1))

    @property
    def scored_windows(self) -> list[int]:
        return sorted(self._scored)

    @property
    def open_parts(self) -> list[tuple[int, str]]:
        """(window, modality) of records held for windows not scored yet."""
        return [(i, m) for i, parts in sorted(self._parts.items()) for m in parts]

    @property
    def open_windows(self) -> list[int]:
        return sorted(set(self._parts) | {i for i in self._known if i not in self._scored})

    # -- decisions -----------------------------------------------------------------------
    def _span(self, i: int) -> tuple[float, float]:
        if i in self._known:
            return self._known[i]
        parts = self._parts.get(i)
        if parts:
            p = next(iter(parts.values()))
            return p.start_s, p.end_s
        start = i * WINDOW_S
        end = start + WINDOW_S
        if self.last_window == i and self.last_end is not None:
            end = max(start, self.last_end)
        return start, end

    def _reason(self, i: int, force: bool) -> str | None:
        parts = self._parts.get(i, {})
        missing = self.expected - set(parts)
        start, end = self._span(i)
        if not missing:
            if self.chat_seen or "chat" in self.config.expected or self.ended:
                return "complete"
            if self.clock >= end + self.config.chat_wait_s:
                return "complete"
        elif all(self._reached.get(m, -1) >= i + self.config.lost_after for m in missing):
            return "moved_on"
        deadline = self.config.deadline_s if self.live else self.config.vod_deadline_s
        if deadline > 0 and self.clock >= end + deadline:
            return "deadline"
        if self.ended and self.last_window is not None and i <= self.last_window:
            if not missing or all(self._reached.get(m, -1) >= self.last_window for m in missing):
                return "stream_end"
        if force:
            return "end_timeout"
        return None

    def ready(self, force: bool = False) -> list[ReadyWindow]:
        """Every open window that can be scored now, in window order (each only once)."""
        candidates = set(self._parts) | set(self._known)
        if self.ended and self.last_window is not None:
            candidates |= set(range(self.last_window + 1))  # windows nobody reported are scored too
        out: list[ReadyWindow] = []
        for i in sorted(candidates - self._scored):
            if self.last_window is not None and self.ended and i > self.last_window:
                continue  # past the media's end: analysers' stray records
            reason = self._reason(i, force)
            if reason is None:
                continue
            parts = self._parts.pop(i, {})
            start, end = self._span(i) if not parts else (min(p.start_s for p in parts.values()), max(p.end_s for p in parts.values()))
            if i in self._known:
                start, end = self._known[i]
            self._scored.add(i)
            out.append(ReadyWindow(i, start, end, parts, sorted(self.expected - set(parts)), reason))
        return out
