"""NATS names in one place: subjects, JetStream streams, KV buckets, event types, ids.

Subjects are lowercase, dot-separated and versioned:

  streamsight.media.v1.<kind>.<stream_id>       ingest -> analysers (memory stream MEDIA)
      kind: frames_flow, frames_cnn, frames_glitch, audio, signals, windows
  streamsight.features.v1.<modality>.<stream_id> analysers -> fusion (file stream FEATURES)
  streamsight.events.v1.<kind>.<stream_id>      events, CloudEvents (file stream EVENTS)
      kind: highlight, glitch, health, sentiment, forecast, status, score
  streamsight.deadletter.v1.<service>           messages that could not be handled (file stream DEADLETTER)
"""

from __future__ import annotations

import re

PREFIX = "streamsight"

MEDIA_STREAM = "MEDIA"
FEATURES_STREAM = "FEATURES"
EVENTS_STREAM = "EVENTS"
DEADLETTER_STREAM = "DEADLETTER"
REGISTRY_BUCKET = "streams"

STREAM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# CloudEvents type -> subject kind
EVENT_KINDS = {
    "streamsight.highlight.v1": "highlight",
    "streamsight.glitch.v1": "glitch",
    "streamsight.health.v1": "health",
    "streamsight.sentiment.v1": "sentiment",
    "streamsight.forecast.v1": "forecast",
    "streamsight.status.v1": "status",
    "streamsight.score.v1": "score",
}
KIND_TO_TYPE = {kind: ce_type for ce_type, kind in EVENT_KINDS.items()}


def is_valid_stream_id(stream_id: str) -> bool:
    return bool(STREAM_ID_RE.match(stream_id or ""))


def media(kind: str, stream_id: str = "*") -> str:
    return f"{PREFIX}.media.v1.{kind}.{stream_id}"


def features(modality: str, stream_id: str = "*") -> str:
    return f"{PREFIX}.features.v1.{modality}.{stream_id}"


def event(kind: str, stream_id: str = "*") -> str:
    return f"{PREFIX}.events.v1.{kind}.{stream_id}"


def event_for_type(ce_type: str, stream_id: str = "*") -> str:
    """Subject of a CloudEvents type; KeyError for an unknown type."""
    return event(EVENT_KINDS[ce_type], stream_id)


def deadletter(service: str) -> str:
    return f"{PREFIX}.deadletter.v1.{service}"


def stream_of(subject: str) -> str:
    """The stream id, i.e. the last token of a per-stream subject."""
    return subject.rsplit(".", 1)[-1]


def feature_msg_id(stream_id: str, modality: str, window: int) -> str:
    """Deduplication id of a feature record: one per (stream, modality, window)."""
    return f"{stream_id}:{modality}:{window}"
