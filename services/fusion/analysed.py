"""Fusion's last word on a stream: the "analysed" status.

Once fusion has scored a stream's last window and published every highlight of it (each
highlight's clips are cut before it is published), one StreamStatus goes out: reporter "fusion",
reason "analysed", state UNSPECIFIED (the stream's state is ingest's to say), with `highlights`
and `windows_scored`, the counts of those events fusion published. A client that has seen it, the
stream's end status and that many highlight and score events has every result of the stream
(`streamsight analyze` stops there instead of waiting for a quiet time).

The other producers of a stream's events finish on their own, so the status also waits, by
their progress and never by a sleep, until:
- glitch is done with the stream: when a glitch replica holds the stream's partition
  (streamsight.partitions' leases), its durable MEDIA consumer `glitch-p<k>` has acknowledged
  the stream's last window record (glitch publishes a batch's incidents before it acknowledges
  the batch, and ends a stream's open incidents on its last window record);
- chat is done with it, when the stream has chat and chat did not fail: chat's latest forecast
  event of the stream was issued at the stream's end (chat publishes each 30 s interval's
  sentiment point, then its forecast; the last interval's when the media ends).
When that takes longer than `wait_s` after the stream finished, or the stream ended without a
last window record (glitch then ends it on its idle timeout), no status is published (logged):
a client falls back to its quiet time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nats.js.errors import NotFoundError

from streamsight import events, subjects
from streamsight.gen.events.v1 import events_pb2
from streamsight.partitions import lease_holders

REPORTER, REASON = "fusion", "analysed"
GLITCH_GROUP = "glitch"  # glitch's partition group; its MEDIA consumer of partition k is "glitch-p<k>"
END_EPS_S = 1e-3


@dataclass
class Pending:
    """An "analysed" status to publish once the other producers are done (kept in KV as `a.<stream>`)."""

    stream_id: str
    event_id: str  # stable per stream run: a second copy (a takeover) is dropped by JetStream
    end_seq: int  # MEDIA stream sequence of the stream's last window record
    end_s: float  # media end, seconds (the last window's end)
    chat: bool  # wait for chat's last forecast
    highlights: int
    windows_scored: int
    since: float  # epoch seconds when the stream was finished here

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Pending":
        return cls(**json.loads(data))

    def status(self) -> events_pb2.StreamStatus:
        return events_pb2.StreamStatus(stream_id=self.stream_id, reason=REASON, reporter=REPORTER,
                                       detail=f"fusion is done: {self.windows_scored} windows scored, {self.highlights} highlights",
                                       highlights=self.highlights, windows_scored=self.windows_scored)


def event_id(stream_id: str, start_wall: float | None) -> str:
    """One id per stream run: a stream id used again later gets its own (ingest's start time differs)."""
    run = int(round((start_wall or 0.0) * 1000))
    return f"{stream_id}:status:{REPORTER}:{REASON}:{run}"


def is_analysed(status: events_pb2.StreamStatus) -> bool:
    """Whether a status is fusion's last word on its stream."""
    return status.reporter == REPORTER and status.reason == REASON


async def glitch_runs(bus, stream_id: str) -> bool:
    """Whether a glitch replica holds the stream's partition (then its events must be waited for)."""
    return subjects.partition_of(stream_id) in await lease_holders(bus, GLITCH_GROUP)


async def glitch_done(js, pending: Pending) -> bool:
    """Glitch's consumer of the stream's partition acknowledged the stream's last window record."""
    try:
        info = await js.consumer_info(subjects.MEDIA_STREAM, f"{GLITCH_GROUP}-p{subjects.partition_of(pending.stream_id)}")
    except NotFoundError:
        return True  # no glitch consumer of the partition: nothing of glitch's to wait for
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= pending.end_seq


async def chat_done(js, pending: Pending) -> bool:
    """Chat's latest forecast of the stream was issued at the stream's end."""
    try:
        msg = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.event("forecast", pending.stream_id))
    except NotFoundError:
        return False
    try:
        forecast = events.decode(msg.headers, msg.data).forecast
    except events.BadEvent:
        return False
    return forecast.issued_at_s >= pending.end_s - END_EPS_S
