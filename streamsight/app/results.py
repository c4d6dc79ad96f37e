"""What one analysed stream produced, gathered from its events (the `analyze` job's memory).

`StreamResults.add(event)` takes gateway Events in any order and keeps the latest of each thing:
a window's score, a highlight, a glitch incident's latest phase, a health incident's latest phase
(an END is not replaced by an earlier phase arriving late), a sentiment point, the latest
forecast, and the stream's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2

TERMINAL = {common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED}


@dataclass
class StreamResults:
    stream_id: str
    source: str
    state: int = common_pb2.STREAM_STATE_PENDING
    last_error: str = ""
    media_time_s: float = 0.0
    duration_s: float = 0.0
    scores: dict[int, events_pb2.WindowScore] = field(default_factory=dict)
    highlights: dict[str, events_pb2.Highlight] = field(default_factory=dict)
    glitches: dict[str, events_pb2.Glitch] = field(default_factory=dict)
    health: dict[str, events_pb2.HealthIncident] = field(default_factory=dict)
    sentiment: dict[float, events_pb2.SentimentPoint] = field(default_factory=dict)
    forecast: events_pb2.SentimentForecast | None = None
    windows_published: int = 0  # from ingest's final status

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def windows_expected(self) -> int:
        """Windows of the stream: ingest's count once it finished, else from the length (10 s each)."""
        if self.windows_published:
            return self.windows_published
        length = self.duration_s or (self.media_time_s if self.finished else 0.0)
        return int(-(-length // 10)) if length > 0 else 0

    def add(self, event: events_pb2.Event) -> str:
        """Record an event; returns the payload kind ("status", "highlight", ...)."""
        kind = event.WhichOneof("payload")
        if kind == "status":
            self._status(event.status)
        elif kind == "score":
            self.scores[event.score.window] = event.score
        elif kind == "highlight":
            self.highlights[event.highlight.highlight_id] = event.highlight
        elif kind == "glitch":
            self.glitches[event.glitch.glitch_id] = event.glitch
        elif kind == "health":
            self._health(event.health)
        elif kind == "sentiment":
            self.sentiment[event.sentiment.start_s] = event.sentiment
        elif kind == "forecast":
            self.forecast = event.forecast
        return kind or ""

    def _health(self, incident: events_pb2.HealthIncident) -> None:
        held = self.health.get(incident.incident_id)
        if held is not None and held.phase == events_pb2.PHASE_END and incident.phase != events_pb2.PHASE_END:
            return
        self.health[incident.incident_id] = incident

    def _status(self, status: events_pb2.StreamStatus) -> None:
        self.media_time_s = max(self.media_time_s, status.media_time_s)
        if status.windows:
            self.windows_published = status.windows
        if status.duration_s:
            self.duration_s = status.duration_s
        if status.state == common_pb2.STREAM_STATE_UNSPECIFIED or self.finished:
            return
        self.state = status.state
        if status.state == common_pb2.STREAM_STATE_FAILED:
            self.last_error = status.detail
        if status.state in TERMINAL and not self.duration_s:
            self.duration_s = status.media_time_s


def ranked(highlights) -> list[tuple[int, events_pb2.Highlight]]:
    """A finished stream's highlights ranked by score (1 = best; ties: the earlier first). Each
    event's own `rank` is its place among those decided before it; this is the final order."""
    order = sorted(highlights, key=lambda h: (-h.score, h.start_s, h.highlight_id))
    return [(k + 1, h) for k, h in enumerate(order)]


def overlaps_glitch(start_s: float, end_s: float, glitches) -> bool:
    """Whether [start_s, end_s) meets any glitch incident's span."""
    return any(g.start_s < end_s and start_s <= g.end_s for g in glitches)


def health_name(kind: int) -> str:
    """A HealthKind as the report and the CLI write it: "black", "audio_gap", ..."""
    return events_pb2.HealthKind.Name(kind).removeprefix("HEALTH_KIND_").lower()


def overlapping_health(start_s: float, end_s: float, incidents) -> list[str]:
    """The kinds of health incidents whose span meets [start_s, end_s), sorted, each once."""
    return sorted({health_name(h.kind) for h in incidents if h.start_s < end_s and start_s <= max(h.end_s, h.start_s)})
