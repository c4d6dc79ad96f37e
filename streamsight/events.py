"""CloudEvents over NATS in binary mode, with a protobuf body.

An event is one NATS message whose headers carry the CloudEvents attributes:
`ce-specversion` (1.0), `ce-type` (e.g. streamsight.highlight.v1), `ce-id`, `ce-source`
(e.g. /streamsight/fusion), `ce-time` (RFC 3339), `ce-subject` (the stream id),
`content-type: application/protobuf` and `ce-dataschema` naming the protobuf message, plus
`Nats-Msg-Id` = ce-id (JetStream deduplication) and `traceparent`. The body is the serialized
protobuf message of the type (see PAYLOADS). The body format is protobuf, never JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from google.protobuf.message import DecodeError, Message

from streamsight.gen.events.v1 import events_pb2

SPECVERSION = "1.0"
CONTENT_TYPE = "application/protobuf"

# CloudEvents type -> (payload class, field of events_pb2.Event's oneof)
PAYLOADS: dict[str, tuple[type[Message], str]] = {
    "streamsight.highlight.v1": (events_pb2.Highlight, "highlight"),
    "streamsight.glitch.v1": (events_pb2.Glitch, "glitch"),
    "streamsight.health.v1": (events_pb2.HealthIncident, "health"),
    "streamsight.sentiment.v1": (events_pb2.SentimentPoint, "sentiment"),
    "streamsight.forecast.v1": (events_pb2.SentimentForecast, "forecast"),
    "streamsight.status.v1": (events_pb2.StreamStatus, "status"),
    "streamsight.score.v1": (events_pb2.WindowScore, "score"),
}


class BadEvent(ValueError):
    """A message on an event subject that is not a valid streamsight CloudEvent."""


def type_of(payload: Message) -> str:
    """The CloudEvents type of a payload message."""
    for ce_type, (cls, _) in PAYLOADS.items():
        if isinstance(payload, cls):
            return ce_type
    raise TypeError(f"{type(payload).__name__} is not an event payload")


def headers_for(ce_type: str, ce_id: str, service: str, stream_id: str, when: datetime | None = None) -> dict[str, str]:
    """CloudEvents binary-mode headers (NATS message id included)."""
    cls, _ = PAYLOADS[ce_type]
    when = when or datetime.now(timezone.utc)
    return {
        "ce-specversion": SPECVERSION,
        "ce-type": ce_type,
        "ce-id": ce_id,
        "ce-source": f"/streamsight/{service}",
        "ce-time": when.isoformat().replace("+00:00", "Z"),
        "ce-subject": stream_id,
        "content-type": CONTENT_TYPE,
        "ce-dataschema": f"proto:{cls.DESCRIPTOR.full_name}",
        "Nats-Msg-Id": ce_id,
    }


def decode(headers: Mapping[str, str] | None, data: bytes, sequence: int = 0) -> events_pb2.Event:
    """Turn a NATS message into the gateway's Event envelope; BadEvent when it is not one."""
    headers = headers or {}
    ce_type = headers.get("ce-type", "")
    if headers.get("ce-specversion") != SPECVERSION or ce_type not in PAYLOADS:
        raise BadEvent(f"not a streamsight CloudEvent (specversion={headers.get('ce-specversion')!r}, type={ce_type!r})")
    cls, field = PAYLOADS[ce_type]
    try:
        payload = cls.FromString(data)
    except DecodeError as exc:
        raise BadEvent(f"{ce_type} body does not decode as {cls.DESCRIPTOR.full_name}: {exc}") from None
    event = events_pb2.Event(
        sequence=sequence,
        id=headers.get("ce-id", ""),
        type=ce_type,
        source=headers.get("ce-source", ""),
        stream_id=headers.get("ce-subject", ""),
    )
    ce_time = headers.get("ce-time")
    if ce_time:
        try:
            event.time.FromDatetime(datetime.fromisoformat(ce_time.replace("Z", "+00:00")))
        except ValueError:
            raise BadEvent(f"ce-time {ce_time!r} is not RFC 3339") from None
    getattr(event, field).CopyFrom(payload)
    return event
