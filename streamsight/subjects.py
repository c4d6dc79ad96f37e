"""NATS names in one place: subjects, JetStream streams, KV buckets, event types, ids.

Subjects are lowercase, dot-separated and versioned:

  streamsight.media.v1.<kind>.<p>.<stream_id>       ingest -> analysers (memory stream MEDIA)
      kind: frames_flow, frames_cnn, frames_glitch, audio, signals, windows
  streamsight.features.v1.<modality>.<p>.<stream_id> analysers -> fusion (file stream FEATURES)
  streamsight.events.v1.<kind>.<p>.<stream_id>      events, CloudEvents (file stream EVENTS)
      kind: highlight, glitch, health, sentiment, forecast, status, score
  streamsight.deadletter.v1.<service>               messages that could not be handled (file stream DEADLETTER)

<p> is the stream's partition, `partition_of(stream_id)`: crc32 of the id modulo `PARTITIONS`.
It lets a stage run as several replicas, each holding some partitions and consuming only their
subjects (streamsight.partitions). PARTITIONS is fixed for a deployment: every process must
agree on it, or a stream's messages land where no replica looks. The stream id stays the last
token (`stream_of`) and the kind the fourth (`split(".")[3]`).
"""

from __future__ import annotations

import re
import zlib

PREFIX = "streamsight"

MEDIA_STREAM = "MEDIA"
FEATURES_STREAM = "FEATURES"
EVENTS_STREAM = "EVENTS"
DEADLETTER_STREAM = "DEADLETTER"
REGISTRY_BUCKET = "streams"

PARTITIONS = 16  # partitions of every per-stream subject; fixed for a deployment

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


def partition_of(stream_id: str, count: int = PARTITIONS) -> int:
    """The partition of a stream: stable across processes and Python versions (no hash())."""
    return zlib.crc32(stream_id.encode()) % count


def _per_stream(family: str, kind: str, stream_id: str, partition: int | None) -> str:
    if stream_id == ">":
        tail = ">" if partition is None else f"{partition}.>"
    elif stream_id == "*":
        tail = f"{'*' if partition is None else partition}.*"
    else:
        tail = f"{partition_of(stream_id) if partition is None else partition}.{stream_id}"
    return f"{PREFIX}.{family}.v1.{kind}.{tail}"


def media(kind: str, stream_id: str = "*", partition: int | None = None) -> str:
    """`...media.v1.<kind>.<p>.<stream>`; "*" for every stream (of `partition` if given), ">" for all."""
    return _per_stream("media", kind, stream_id, partition)


def features(modality: str, stream_id: str = "*", partition: int | None = None) -> str:
    return _per_stream("features", modality, stream_id, partition)


def event(kind: str, stream_id: str = "*", partition: int | None = None) -> str:
    return _per_stream("events", kind, stream_id, partition)


def event_for_type(ce_type: str, stream_id: str = "*", partition: int | None = None) -> str:
    """Subject of a CloudEvents type; KeyError for an unknown type."""
    return event(EVENT_KINDS[ce_type], stream_id, partition)


def deadletter(service: str) -> str:
    return f"{PREFIX}.deadletter.v1.{service}"


def stream_of(subject: str) -> str:
    """The stream id, i.e. the last token of a per-stream subject."""
    return subject.rsplit(".", 1)[-1]


def pattern_of(subject: str) -> str:
    """A per-stream subject without its partition and stream id (a bounded metric label)."""
    parts = subject.split(".")
    if len(parts) == 6 and parts[0] == PREFIX and parts[1] in ("media", "features", "events"):
        return ".".join(parts[:4])
    return subject.rsplit(".", 1)[0]


def feature_msg_id(stream_id: str, modality: str, window: int) -> str:
    """Deduplication id of a feature record: one per (stream, modality, window)."""
    return f"{stream_id}:{modality}:{window}"
