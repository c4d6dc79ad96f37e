"""Every chat reader's start, progress and status, kept in JetStream KV: what lets any chat
replica resume, stop or report a reader.

Bucket `chat.resume_bucket` (chat's own; see streamsight/natsauth.py), one key per stream id,
a JSON value (`ReaderPoint`): the StartChat arguments (`source`, `media_start`, `pacing`),
`started_wall` (when the first reader started: a realtime replay keeps its clock),
`next_window` / `next_interval` (the first window and 30 s interval not published yet), `stop`
(StopChat asked for it: the replica holding the stream's partition stops the reader), and the
reader's status as GetChat reports it (`state`, `messages`, `rejected`, `format`,
`last_error`, `replica`, `finished_at`).

Written by the replica that takes the StartChat (created: a second StartChat of a running
stream is refused by the create), by the one running the reader (after each publish, and with
its final status when it finishes), and by StopChat's replica (the `stop` flag). Every write
but the first is an update at the revision last seen, so a stop request and a progress save
never overwrite each other (services/chat/readers.py). A finished reader's point stays, with its
terminal status, for FINISHED_KEEP_S (GetChat answers from any replica), then is deleted. A
shutdown or a crash leaves a running reader's point: whichever replica holds the stream's
partition next starts the reader again (service.py), reading the chat again from the stream's
start and publishing only the windows and intervals not out yet, the forecaster's state
rebuilt on the way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from streamsight.gen.chat.v1 import chat_pb2
from streamsight.gen.common.v1 import common_pb2
from streamsight.resume import PointStore

FINISHED_KEEP_S = 3600.0  # a finished reader's status stays in KV this long (GetChat from any replica)
TERMINAL = (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_STOPPED, common_pb2.STREAM_STATE_FAILED)


@dataclass
class ReaderPoint:
    source: str
    media_start: float
    pacing: int
    started_wall: float
    next_window: int = 0
    next_interval: int = 0
    stop: bool = False
    state: int = common_pb2.STREAM_STATE_RUNNING
    messages: int = 0
    rejected: int = 0
    format: str = ""
    last_error: str = ""
    replica: str = ""  # the replica running (or that ran) the reader; "" before one took it
    finished_at: float = 0.0  # wall time the reader finished (terminal states)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def status(self, stream_id: str) -> chat_pb2.ChatStatus:
        return chat_pb2.ChatStatus(stream_id=stream_id, state=self.state, messages=self.messages, rejected=self.rejected,
                                   format=self.format, last_error=self.last_error)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReaderPoint":
        raw = json.loads(data)
        return cls(str(raw["source"]), float(raw["media_start"]), int(raw["pacing"]), float(raw["started_wall"]),
                   int(raw.get("next_window", 0)), int(raw.get("next_interval", 0)), bool(raw.get("stop", False)),
                   int(raw.get("state", common_pb2.STREAM_STATE_RUNNING)), int(raw.get("messages", 0)), int(raw.get("rejected", 0)),
                   str(raw.get("format", "")), str(raw.get("last_error", "")), str(raw.get("replica", "")),
                   float(raw.get("finished_at", 0.0)))


class ReaderStore(PointStore[ReaderPoint]):
    """The bucket of reader points (one per chat reader, running or finished lately)."""

    service = "chat"
    point_type = ReaderPoint

    async def left(self) -> dict[str, ReaderPoint]:
        """The readers not finished (a previous process's, or another replica's)."""
        return {sid: point for sid, point in (await super().left()).items() if not point.finished}
