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

from streamsight.resume import PointStore


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


class ReaderStore(PointStore[ReaderPoint]):
    """The bucket of reader points (one per chat reader running)."""

    service = "chat"
    point_type = ReaderPoint
