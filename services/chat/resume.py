"""What a restarted chat service needs to resume its readers, kept in JetStream KV.

Bucket `chat.resume_bucket` (chat's own; see streamsight/natsauth.py), one key per stream id,
a JSON value: the StartChat arguments (`source`, `media_start`, `pacing`), `started_wall` (when
the first reader started: a realtime replay keeps its clock), and `next_window` /
`next_interval` (the first window and 30 s interval not published yet).

Written when a reader starts and after each publish; deleted when the reader finishes (the
stream ended, StopChat). A shutdown or a crash leaves it: a chat service that starts finds its
readers here and starts them again (service.py), reading the chat again from the stream's start
and publishing only the windows and intervals not out yet, the forecaster's state rebuilt on the
way. A store that fails (NATS away) is logged and counted and never stops a reader.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import structlog
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from streamsight.bus import Bus
from streamsight.telemetry import MESSAGES_FAILED

log = structlog.get_logger(__name__)


@dataclass
class ReaderPoint:
    source: str
    media_start: float
    pacing: int
    started_wall: float
    next_window: int = 0
    next_interval: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReaderPoint":
        raw = json.loads(data)
        return cls(str(raw["source"]), float(raw["media_start"]), int(raw["pacing"]), float(raw["started_wall"]),
                   int(raw.get("next_window", 0)), int(raw.get("next_interval", 0)))


class ReaderStore:
    """The bucket of reader points (one per chat reader running)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, bus: Bus, bucket: str) -> "ReaderStore":
        return cls(await bus.kv(bucket, history=1))

    async def save(self, stream_id: str, point: ReaderPoint) -> None:
        try:
            await self.kv.put(stream_id, point.to_bytes())
        except Exception as exc:  # NATS away: the reader goes on, only a resume would miss it
            MESSAGES_FAILED.labels("chat", "resume_save").inc()
            log.warning("chat reader point not saved", stream_id=stream_id, error=repr(exc))

    async def forget(self, stream_id: str) -> None:
        try:
            await self.kv.delete(stream_id)
        except Exception as exc:
            MESSAGES_FAILED.labels("chat", "resume_save").inc()
            log.warning("chat reader point not deleted", stream_id=stream_id, error=repr(exc))

    async def left(self) -> dict[str, ReaderPoint]:
        """The readers a previous chat service left running (unreadable entries are dropped, logged)."""
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return {}
        found: dict[str, ReaderPoint] = {}
        for key in keys:
            try:
                entry = await self.kv.get(key)
                if entry.value:
                    found[key] = ReaderPoint.from_bytes(entry.value)
            except KeyNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                MESSAGES_FAILED.labels("chat", "resume_bad_entry").inc()
                log.error("unreadable chat reader point dropped", stream_id=key, error=repr(exc))
                await self.forget(key)
        return found
