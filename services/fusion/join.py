"""Joins one stream's per-window feature records as they arrive and says when a window is ready.

Completion is by progress, not by wall clock: lagging is not failing. Window i of a stream is
scored exactly once, when the first of these holds:

* **complete**: every expected modality's record for it is in (a record flagged "empty" or
  "partial" counts: it is the stage's answer for the window);
* every missing modality **cannot deliver** it, each for one of these reasons:
  - **moved_on**: the stage already published window i + `lost_after` of the stream (stages
    publish in window order, so its record for i is lost);
  - **stage_done**: the stage said it is done with the stream (a terminal or "chat_failed"
    status it reported), or the stream ended and the stage delivered the last window;
  - **stage_stalled**, the last resort: the stage delivered nothing for this stream for
    `stall_timeout_s` of wall time (a stage that is not deployed; minutes, 0 = never);
* **deadline** (live sources only): the media clock is `deadline_s` past the window's end.
  Files have no deadline: a stage that lags keeps the window open as long as it makes progress.

Expected modalities are the configured ones (vision and audio by default) plus chat when the
stream declared chat at its start (StreamStatus.modalities) or a chat record arrived. Before
the stream's start is known (ingest's "started" status, which follows the declaration on the
status stream), a window that is complete without chat waits: whether chat comes is then not
known. It stops waiting at the start, the stream's end, or after `stall_timeout_s`.

Input bounds (`check_index`): an index is accepted only within the stream's known range:
at most `max_ahead` windows past the highest index seen; for a file (duration known at the
start) at most ceil(duration / window) + 1; for a live stream at most `max_ahead` windows past
what the wall-clock time since its start allows. A stream met mid-way (never seen from its
start, no saved state) is held to the first `max_ahead` windows.

The media clock is the largest media time seen: window record ends and record ends.
Missing modalities are imputed by the model and listed in `ReadyWindow.missing`. Records for
a scored window (late or duplicated by a redelivery) are ignored and counted.
Plain Python, no NATS: the service feeds it and persists `to_meta` (see `from_meta`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from streamsight.windows import DEFAULT_WINDOW_S

MODALITIES = ("vision", "audio", "chat")
# A window scored with a modality missing names the weakest evidence among its modalities.
_RANK = {"moved_on": 0, "stage_done": 1, "deadline": 2, "stage_stalled": 3}


class OutOfRange(ValueError):
    """A window index outside the stream's known range."""


@dataclass(frozen=True)
class JoinConfig:
    expected: frozenset[str] = frozenset({"vision", "audio"})
    deadline_s: float = 15.0  # live: media seconds past a window's end
    lost_after: int = 2  # a stage at window i + lost_after will not deliver window i
    stall_timeout_s: float = 600.0  # wall seconds a stage may deliver nothing for a stream (0 = never)
    window_s: float = DEFAULT_WINDOW_S  # the platform's window length
    max_ahead: int = 30  # windows past the highest seen (and, live, past the wall clock) a record may be

    def __post_init__(self) -> None:
        unknown = set(self.expected) - set(MODALITIES)
        if unknown or not self.expected:
            raise ValueError(f"expected modalities must be a non-empty subset of {MODALITIES}, got {sorted(self.expected)}")
        if self.deadline_s <= 0 or self.lost_after < 1 or self.stall_timeout_s < 0 or self.max_ahead < 1:
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
    reason: str  # complete, moved_on, stage_done, deadline, stage_stalled

    def features(self) -> dict[str, float]:
        """Fused feature values, named "<modality>.<feature>"."""
        return {f"{m}.{k}": v for m, part in sorted(self.parts.items()) for k, v in part.values.items()}


@dataclass
class StreamJoin:
    stream_id: str
    config: JoinConfig = field(default_factory=JoinConfig)
    live: bool = False
    started: bool = False  # the stream's start status was seen
    duration_s: float = 0.0  # files: the media's length from the start status
    start_wall: float | None = None  # live: epoch seconds of the start
    declared: frozenset[str] | None = None  # modalities said at the start; None = not said
    chat_seen: bool = False
    highest: int = -1  # highest window index accepted
    clock: float = 0.0  # media clock, seconds
    last_window: int | None = None  # index of the stream's last window, once known
    last_end: float | None = None
    ended: bool = False
    end_seq: int = 0  # MEDIA stream sequence of the last window record (0: not seen)
    first_seen: float = field(default_factory=time.monotonic)  # wall (monotonic): the stall clock's origin
    duplicates: int = 0
    late: int = 0

    def __post_init__(self) -> None:
        self._parts: dict[int, dict[str, Part]] = {}
        self._known: dict[int, tuple[float, float]] = {}  # window records of open windows: index -> span
        self._window_high = -1  # highest window record index
        self._floor = 0  # every window below it is scored
        self._scored: set[int] = set()  # scored windows at or above the floor
        self._reached: dict[str, int] = {}  # modality -> highest window delivered
        self._delivered_at: dict[str, float] = {}  # modality -> wall (monotonic) time of its latest record
        self._done_stages: set[str] = set()

    # -- stream facts ----------------------------------------------------------------------
    @property
    def expected(self) -> set[str]:
        chat = self.chat_seen or (self.declared is not None and "chat" in self.declared)
        return set(self.config.expected) | ({"chat"} if chat else set())

    def start(self, live: bool, duration_s: float, start_wall: float | None) -> None:
        """The stream's start status: live or a file (and its length), and when it started."""
        self.started, self.live = True, live
        self.duration_s = max(0.0, duration_s) if math.isfinite(duration_s) else 0.0
        self.start_wall = start_wall

    def declare(self, modalities: set[str]) -> None:
        """The modalities the stream was started with (the first declaration holds)."""
        if self.declared is None:
            self.declared = frozenset(m for m in modalities if m in MODALITIES)

    def stage_done(self, modality: str) -> None:
        """A stage said it is done with the stream: it delivers nothing more."""
        if modality in MODALITIES:
            self._done_stages.add(modality)

    def said_done(self, modality: str) -> bool:
        """Whether the modality's stage said it is done with the stream (stage_done)."""
        return modality in self._done_stages

    def silent_for(self, modality: str, now: float) -> float:
        """Wall seconds since the modality's latest record of this stream (or since the stream was first seen)."""
        return now - self._delivered_at.get(modality, self.first_seen)

    # -- input bounds ----------------------------------------------------------------------
    def limit(self, wall_now: float, relative: bool = True) -> int:
        """The largest window index this stream may have now.

        `relative=False` drops the "past the highest seen" bound where the stream's length or
        start is known: a terminal status may come before the last window records do.
        """
        top = self.highest + self.config.max_ahead
        if self.duration_s > 0:
            file_top = math.ceil(self.duration_s / self.config.window_s) + 1
            top = min(top, file_top) if relative else file_top
        elif self.live and self.start_wall is not None:
            wall_top = math.ceil(max(0.0, wall_now - self.start_wall) / self.config.window_s) + self.config.max_ahead
            top = min(top, wall_top) if relative else wall_top
        return top

    def check_index(self, index: int, wall_now: float | None = None, relative: bool = True) -> None:
        """OutOfRange unless `index` lies in the stream's known range (see the module's docstring)."""
        top = self.limit(time.time() if wall_now is None else wall_now, relative)
        if index < 0 or index > top:
            kind = f"a {self.duration_s:.1f} s file" if self.duration_s > 0 else ("a live stream" if self.live else "a stream")
            raise OutOfRange(f"window {index} is outside the known range of {kind} (0..{top}; highest seen {self.highest})")

    # -- input -----------------------------------------------------------------------------
    def is_scored(self, window: int) -> bool:
        return window < self._floor or window in self._scored

    def has(self, window: int, modality: str) -> bool:
        return modality in self._parts.get(window, {})

    def add(self, part: Part, now: float | None = None) -> list[ReadyWindow]:
        """A modality's record arrived; returns the windows that became ready."""
        now = time.monotonic() if now is None else now
        if part.modality not in MODALITIES:
            raise ValueError(f"unknown modality {part.modality!r}")
        if part.window < 0 or not (math.isfinite(part.start_s) and math.isfinite(part.end_s)):
            raise ValueError(f"window {part.window} [{part.start_s}, {part.end_s}] is not a valid window")
        if part.modality == "chat":
            self.chat_seen = True
        self.highest = max(self.highest, part.window)
        self._reached[part.modality] = max(self._reached.get(part.modality, -1), part.window)
        self._delivered_at[part.modality] = max(self._delivered_at.get(part.modality, now), now)
        self._advance_clock(part.window, part.end_s)
        if self.is_scored(part.window):
            self.late += 1
            return self.ready(now)
        slot = self._parts.setdefault(part.window, {})
        if part.modality in slot:
            self.duplicates += 1
        else:
            slot[part.modality] = part
        return self.ready(now)

    def _advance_clock(self, index: int, end_s: float) -> None:
        # a span is trusted only up to its window's end (1 s of slack): a forged end time
        # cannot pass every live deadline at once
        self.clock = max(self.clock, min(end_s, (index + 1) * self.config.window_s + 1.0))

    def reached(self, modality: str, window: int) -> None:
        """Restored state: the modality delivered this window before a restart."""
        self._reached[modality] = max(self._reached.get(modality, -1), window)
        self.highest = max(self.highest, window)

    def media_window(self, index: int, start_s: float, end_s: float, last: bool = False, now: float | None = None) -> list[ReadyWindow]:
        """Ingest's window record: the media clock, the window's span, and the stream's end."""
        self.highest = max(self.highest, index)
        self._window_high = max(self._window_high, index)
        if not self.is_scored(index):
            self._known[index] = (start_s, end_s)
        self._advance_clock(index, end_s)
        if last:
            self.last_window, self.last_end = index, end_s
        return self.ready(now)

    def implied_last(self, media_time_s: float, windows: int = 0) -> int | None:
        """The last window index a terminal status implies (its window count, else its media time)."""
        if windows > 0:
            return windows - 1
        if media_time_s > 0 and math.isfinite(media_time_s):
            return max(0, math.ceil(media_time_s / self.config.window_s - 1e-6) - 1)
        return None

    def end(self, media_time_s: float, now: float | None = None, windows: int = 0) -> list[ReadyWindow]:
        """The stream ended (last window record seen, or a terminal status)."""
        self.ended = True
        if self.last_window is None:
            seen = [self._window_high, self.highest, max(self._parts, default=-1), self._floor - 1, max(self._scored, default=-1)]
            implied = self.implied_last(media_time_s, windows)
            if implied is not None:
                seen.append(implied)
            top = max(seen)
            if top >= 0:
                self.last_window = top
                self.last_end = media_time_s if media_time_s > top * self.config.window_s else None
        if self.last_window is not None and math.isfinite(media_time_s):
            self._advance_clock(self.last_window, media_time_s)
        return self.ready(now)

    def mark_scored(self, window: int) -> None:
        """This window is scored (also: restored state, scored before a restart)."""
        self._scored.add(window)
        self._parts.pop(window, None)
        self._known.pop(window, None)
        while self._floor in self._scored:
            self._scored.discard(self._floor)
            self._floor += 1

    # -- state -----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Ended and every window up to the last scored: the stream's state can go."""
        if not self.ended or self.last_window is None:
            return self.ended and not self._parts
        return self._floor > self.last_window

    @property
    def scored_windows(self) -> list[int]:
        return list(range(self._floor)) + sorted(self._scored)

    @property
    def open_parts(self) -> list[tuple[int, str]]:
        """(window, modality) of records held for windows not scored yet."""
        return [(i, m) for i, parts in sorted(self._parts.items()) for m in parts]

    @property
    def open_windows(self) -> list[int]:
        return sorted(self._candidates())

    def to_meta(self) -> dict:
        """The stream's facts as JSON-ready data (records and scores are kept apart)."""
        return {
            "live": self.live, "started": self.started, "duration_s": self.duration_s, "start_wall": self.start_wall,
            "declared": None if self.declared is None else sorted(self.declared), "chat_seen": self.chat_seen,
            "highest": self.highest, "window_high": self._window_high, "last_window": self.last_window, "last_end": self.last_end,
            "clock": self.clock, "ended": self.ended, "done_stages": sorted(self._done_stages), "reached": dict(self._reached),
            "end_seq": self.end_seq,
        }

    @classmethod
    def from_meta(cls, stream_id: str, config: JoinConfig, meta: dict) -> "StreamJoin":
        """A join rebuilt from `to_meta` after a restart; decides nothing (call `ready`)."""
        join = cls(stream_id, config)
        join.live, join.started, join.chat_seen, join.ended = (bool(meta.get(k, False)) for k in ("live", "started", "chat_seen", "ended"))
        join.duration_s = float(meta.get("duration_s") or 0.0)
        join.start_wall = None if meta.get("start_wall") is None else float(meta["start_wall"])
        join.declared = None if meta.get("declared") is None else frozenset(meta["declared"])
        join.highest = int(meta.get("highest", meta.get("known", -1)))
        join._window_high = int(meta.get("window_high", meta.get("known", -1)))
        last = meta.get("last_window")
        join.last_window = None if last is None else int(last)
        join.last_end = None if meta.get("last_end") is None else float(meta["last_end"])
        join.clock = float(meta.get("clock", 0.0))
        join.end_seq = int(meta.get("end_seq") or 0)
        join._done_stages = {m for m in meta.get("done_stages", []) if m in MODALITIES}
        join._reached = {m: int(i) for m, i in (meta.get("reached") or {}).items() if m in MODALITIES}
        return join

    # -- decisions -------------------------------------------------------------------------
    def _candidates(self) -> set[int]:
        """Open windows: with records, reported by ingest, or (after the end) up to the last."""
        top = self._window_high
        if self.ended and self.last_window is not None:
            top = max(top, self.last_window)
        out = set(self._parts) | set(self._known) | set(range(self._floor, top + 1))
        out = {i for i in out if not self.is_scored(i)}
        if self.ended and self.last_window is not None:
            out = {i for i in out if i <= self.last_window}  # past the media's end: stages' stray records
        return out

    def _span(self, i: int) -> tuple[float, float]:
        if i in self._known:
            return self._known[i]
        parts = self._parts.get(i)
        if parts:
            return min(p.start_s for p in parts.values()), max(p.end_s for p in parts.values())
        start = i * self.config.window_s
        end = start + self.config.window_s
        if self.last_window == i and self.last_end is not None:
            end = max(start, self.last_end)
        return start, end

    def _chat_unknown(self, now: float) -> bool:
        """Whether chat may still be expected: not configured, not declared, not seen, start not yet known."""
        if "chat" in self.expected or self.declared is not None or self.started or self.ended:
            return False
        return not (self.config.stall_timeout_s > 0 and now - self.first_seen >= self.config.stall_timeout_s)

    def _lost(self, modality: str, i: int, now: float) -> str | None:
        """Why `modality` cannot deliver window i, or None while it still may."""
        if self._reached.get(modality, -1) >= i + self.config.lost_after:
            return "moved_on"
        if modality in self._done_stages:
            return "stage_done"
        if self.ended and self.last_window is not None and self._reached.get(modality, -1) >= self.last_window:
            return "stage_done"
        if self.config.stall_timeout_s > 0 and self.silent_for(modality, now) >= self.config.stall_timeout_s:
            return "stage_stalled"
        return None

    def _reason(self, i: int, now: float) -> str | None:
        missing = self.expected - set(self._parts.get(i, {}))
        if not missing:
            return None if self._chat_unknown(now) else "complete"
        reasons = [self._lost(m, i, now) for m in sorted(missing)]
        if None not in reasons:
            return max(reasons, key=lambda r: _RANK[r])
        if self.live and self.clock >= self._span(i)[1] + self.config.deadline_s:
            return "deadline"
        return None

    def ready(self, now: float | None = None) -> list[ReadyWindow]:
        """Every open window that can be scored now, in window order (each only once)."""
        now = time.monotonic() if now is None else now
        out: list[ReadyWindow] = []
        for i in sorted(self._candidates()):
            reason = self._reason(i, now)
            if reason is None:
                continue
            start, end = self._span(i)
            parts = self._parts.get(i, {})
            out.append(ReadyWindow(i, start, end, parts, sorted(self.expected - set(parts)), reason))
            self.mark_scored(i)
        return out

    def stall_due(self, now: float) -> bool:
        """Whether the wall clock alone may make a window ready now (the stall timeout passed)."""
        t = self.config.stall_timeout_s
        if t <= 0:
            return False
        return any(self.silent_for(m, now) >= t for m in self.expected) or (not self.started and now - self.first_seen >= t)
