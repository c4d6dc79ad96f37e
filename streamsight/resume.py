"""Per-stream progress points in a service's own JetStream KV bucket, for resuming after a crash.

A service that must pick its streams up again after a kill (ingest's sources, chat's readers)
saves a point per stream id as it goes, forgets it when the stream is done, and on start takes
every point a previous process left. A point is any object with `to_bytes()`; the subclass names
its type (`point_type`, with `from_bytes`) and the service (logs, metrics). A store that fails
(NATS away) is logged and counted and never stops a stream: only a resume would miss the point.
An unreadable entry is dropped, logged and counted.
"""

from __future__ import annotations

from typing import ClassVar, Generic, Protocol, TypeVar

import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from streamsight.bus import Bus, kv_entries
from streamsight.telemetry import MESSAGES_FAILED

log = structlog.get_logger(__name__)


class Point(Protocol):
    def to_bytes(self) -> bytes: ...


P = TypeVar("P", bound=Point)


class PointStore(Generic[P]):
    """One point per stream id in a KV bucket (history 1: only the latest point matters)."""

    service: ClassVar[str]
    point_type: ClassVar[type]

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self.kv = kv
        self.js = js
        self.bucket = bucket

    @classmethod
    async def open(cls, bus: Bus, bucket: str):
        return cls(await bus.kv(bucket, history=1), bus.js, bucket)

    async def save(self, stream_id: str, point: P) -> None:
        try:
            await self.kv.put(stream_id, point.to_bytes())
        except Exception as exc:  # NATS away: the stream goes on, only a resume would miss it
            MESSAGES_FAILED.labels(self.service, "resume_save").inc()
            log.warning("resume point not saved", service=self.service, stream_id=stream_id, error=repr(exc))

    async def forget(self, stream_id: str) -> None:
        try:
            await self.kv.delete(stream_id)
        except Exception as exc:
            MESSAGES_FAILED.labels(self.service, "resume_save").inc()
            log.warning("resume point not deleted", service=self.service, stream_id=stream_id, error=repr(exc))

    async def left(self) -> dict[str, P]:
        """The points a previous process left (its streams were not done). Read with kv_entries, not
        nats-py's `keys()`: that listing drops keys while others are written (33 of 500 listings of 4
        keys, one written every millisecond), and other replicas write this bucket as it is read."""
        found: dict[str, P] = {}
        for entry in await kv_entries(self.js, self.bucket):
            if not entry.value:
                continue
            try:
                found[entry.key] = self.point_type.from_bytes(entry.value)
            except (ValueError, KeyError, TypeError) as exc:
                MESSAGES_FAILED.labels(self.service, "resume_bad_entry").inc()
                log.error("unreadable resume point dropped", service=self.service, stream_id=entry.key, error=repr(exc))
                await self.forget(entry.key)
        return found
