"""Health incidents of one stream: at most one open per kind, START/UPDATE/END events.

Incidents of all kinds share one counter per stream, so "<stream>:health:<n>" names one
incident on all its phases. An open incident sends an UPDATE every `update_every_s` of media
time while it lasts; a change that has no duration (a format change) is a START and an END
at once. Closed incidents are kept for `keep_s` of media time for the per-window summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

START, UPDATE, END = "start", "update", "end"


@dataclass
class HealthEvent:
    """One phase of one incident, ready to publish as events_pb2.HealthIncident."""

    incident: int
    phase: str
    kind: str
    severity: float
    start_s: float
    end_s: float
    detail: str
    value: float
    detected_at_s: float
    update: int = 0  # number of this UPDATE within its incident (0 for START/END)


@dataclass
class _Open:
    number: int
    start_s: float
    end_s: float
    severity: float
    detail: str
    value: float
    last_update_s: float
    updates: int = 0


@dataclass
class Incidents:
    update_every_s: float = 10.0
    keep_s: float = 120.0
    _open: dict[str, _Open] = field(default_factory=dict)
    _count: int = 0
    closed: list[tuple[str, float, float]] = field(default_factory=list)  # (kind, start_s, end_s)

    def is_open(self, kind: str) -> bool:
        return kind in self._open

    def start_of(self, kind: str) -> float | None:
        inc = self._open.get(kind)
        return inc.start_s if inc else None

    def move_start(self, kind: str, start_s: float) -> None:
        """Later evidence puts the open incident's start at `start_s` (its END carries it)."""
        if kind in self._open:
            self._open[kind].start_s = start_s

    def raise_(self, kind: str, start_s: float, t: float, severity: float, detail: str, value: float,
               at: float | None = None) -> list[HealthEvent]:
        """The fault is there at media time `t` (it began at `start_s`): START, or UPDATE when due.

        `at` is how far the media had come when this was decided (default `t`): an audio
        chunk's evidence is known once the whole chunk is in."""
        at = t if at is None else at
        severity = round(min(1.0, max(0.0, severity)), 4)
        inc = self._open.get(kind)
        if inc is None:
            inc = self._open[kind] = _Open(self._count, start_s, t, severity, detail, value, t)
            self._count += 1
            return [self._event(kind, inc, START, at)]
        inc.end_s = max(inc.end_s, t)
        inc.severity = max(inc.severity, severity)
        inc.detail, inc.value = detail, value
        if t - inc.last_update_s >= self.update_every_s:
            inc.last_update_s = t
            inc.updates += 1
            return [self._event(kind, inc, UPDATE, at)]
        return []

    def clear(self, kind: str, end_s: float, t: float) -> list[HealthEvent]:  # t: when it was seen
        """The fault is gone (its last evidence was at `end_s`, seen by `t`): END if one is open."""
        inc = self._open.pop(kind, None)
        if inc is None:
            return []
        inc.end_s = max(inc.start_s, end_s)
        self.closed.append((kind, inc.start_s, inc.end_s))
        self.closed = [c for c in self.closed if c[2] >= t - self.keep_s]
        return [self._event(kind, inc, END, t)]

    def instant(self, kind: str, t: float, severity: float, detail: str, value: float, at: float | None = None) -> list[HealthEvent]:
        """A change with no duration at `t`, decided at `at` (default `t`): START and END together."""
        at = t if at is None else at
        return self.raise_(kind, t, t, severity, detail, value, at) + self.clear(kind, t, at)

    def close_all(self, t: float) -> list[HealthEvent]:
        out: list[HealthEvent] = []
        for kind in list(self._open):
            out += self.clear(kind, self._open[kind].end_s, t)
        return out

    def seconds_in(self, start_s: float, end_s: float) -> dict[str, float]:
        """Seconds of [start_s, end_s) covered by each kind's incidents (open ones up to their end so far)."""
        spans = self.closed + [(k, i.start_s, i.end_s) for k, i in self._open.items()]
        out: dict[str, float] = {}
        for kind, a, b in spans:
            overlap = min(b, end_s) - max(a, start_s)
            if overlap > 0 or (a == b and start_s <= a < end_s):
                out[kind] = out.get(kind, 0.0) + max(overlap, 0.0)
        return out

    @staticmethod
    def _event(kind: str, inc: _Open, phase: str, t: float) -> HealthEvent:
        return HealthEvent(inc.number, phase, kind, inc.severity, inc.start_s, inc.end_s, inc.detail, round(inc.value, 4), t,
                           inc.updates if phase == UPDATE else 0)
