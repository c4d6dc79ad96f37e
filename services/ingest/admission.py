"""What MEDIA takes from one ingested stream: pacing, and the one drop policy.

MEDIA (streamsight.bus.STREAMS) is an in-memory stream with interest retention: the messages
it holds for a stream are that stream's backlog (what some analyser has not acknowledged), and
what it holds in all is nats-server's memory (about 1.4 bytes of RSS per byte). It is bounded
(1 GiB) and refuses new messages when full (DiscardPolicy.NEW); it never drops old ones.

The drop policy:

- **A file never drops anything.** Before each message, ingest waits while the stream's backlog
  is at ``max_backlog`` or MEDIA holds ``media_max_bytes`` in all (pacing: decoding waits for
  the analysers). A message MEDIA still refuses is retried, with backoff, until it is taken.
- **A live source drops sampled frames only.** It cannot wait without falling behind real
  time, so a frame is dropped -- the newest, the one at hand; frames already in MEDIA stay --
  while the stream's backlog is at ``max_backlog``, MEDIA holds ``media_max_bytes``, or MEDIA
  refuses the frame. A dropped frame is counted
  (``streamsight_ingest_frames_dropped_total{consumer,reason}``), logged (at most once per
  ``LOG_EVERY_S`` per stream) and visible downstream: it keeps its ``sample_index``, so each
  analyser sees the gap in that consumer's sequence and flags the window partial, and the
  window's record counts it (``WindowRecord.frames_dropped``). A file played as live is live
  here: holding it back would stop it being real time.
- **Nothing else is ever dropped**, live or not: window records, audio chunks and decoder
  signals that MEDIA refuses are retried until they are taken. The one bound is the stream's
  stop: once stopped on request (`stop()`), what is left (the last window record) is tried
  once, without pacing, and given up with an error log if MEDIA refuses it, so a stop never
  hangs on a full MEDIA. Each refusal is counted (``streamsight_ingest_media_refused_total{kind}``).

Asking MEDIA for the backlog costs a round trip, so it is done only when needed: after a check
that found ``n`` of this stream's messages and ``b`` bytes held, ``max_backlog - n`` messages
of at most ``media_max_bytes - b`` bytes in all may go out before the next check (other streams
publish meanwhile, so with several streams the byte bound can be passed by what each was
allowed since its last check; MEDIA's own limit stays the hard one).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.js.errors import APIError
from prometheus_client import Counter

from streamsight import subjects
from streamsight.bus import Bus

log = structlog.get_logger(__name__)

FRAMES_DROPPED = Counter(
    "streamsight_ingest_frames_dropped_total",
    "Sampled frames of live sources dropped because analysers were behind (backlog) or MEDIA was full",
    ["consumer", "reason"],
)
MEDIA_REFUSED = Counter(
    "streamsight_ingest_media_refused_total", "Publishes MEDIA refused because it was full; retried until taken", ["kind"]
)
STORED_OVERHEAD = 512  # bytes MEDIA stores per message beside the payload: subject, headers, id
LOG_EVERY_S = 10.0
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 1.0
PACE_POLL_S = 0.05
# JetStream's answers for a stream (or the account's memory store) that is full.
_FULL_CODES = {10077, 10023}  # store failed ("maximum bytes exceeded"), insufficient resources


def is_refusal(exc: BaseException) -> bool:
    """True when JetStream refused a publish because the stream or its store is full."""
    if not isinstance(exc, APIError):
        return False
    text = (exc.description or "").lower()
    return exc.err_code in _FULL_CODES and ("exceeded" in text or "insufficient" in text)


class MediaAdmission:
    """The drop policy for one stream (see the module docstring). `realtime`: a live source."""

    def __init__(self, bus: Bus, stream_id: str, max_backlog: int, max_bytes: int, realtime: bool):
        self.bus = bus
        self.stream_id = stream_id
        self.max_backlog = max_backlog
        self.max_bytes = max_bytes
        self.realtime = realtime
        self.dropped: dict[str, int] = {}  # consumer -> frames dropped
        self.refused = 0  # publishes MEDIA refused (and that were retried)
        self._dropped_by_window: dict[int, int] = {}
        self._room = 0  # messages that may go out before the backlog is checked again
        self._byte_room = 0  # and bytes
        self._logged_at = -LOG_EVERY_S
        self._stopping = False
        self._log = log.bind(stream_id=stream_id)

    def stop(self) -> None:
        """The stream was stopped on request: no more waiting for MEDIA (see the module docstring)."""
        self._stopping = True

    # -- the two kinds of message ------------------------------------------------------------
    async def frame(self, consumer: str, window: int, subject: str, data: bytes, msg_id: str) -> bool:
        """Publish a sampled frame; False when a live source dropped it (files always publish)."""
        size = len(data) + STORED_OVERHEAD
        if not self.realtime:
            await self._wait_for_room(size)
            await self._publish_until_taken(subject, data, msg_id, "frame")
            return True
        if not await self._has_room(size):
            self._drop(consumer, window, "backlog")
            return False
        try:
            await self.bus.publish(subject, data, msg_id, kind="frame")
        except APIError as exc:
            if not is_refusal(exc):
                raise
            self._drop(consumer, window, "media_full")
            return False
        return True

    async def message(self, subject: str, data: bytes, msg_id: str | None, kind: str) -> None:
        """Publish anything but a frame: never dropped (files are paced first)."""
        size = len(data) + STORED_OVERHEAD
        if self.realtime:
            self._room -= 1
            self._byte_room -= size
        else:
            await self._wait_for_room(size)
        await self._publish_until_taken(subject, data, msg_id, kind)

    def dropped_in(self, window: int) -> int:
        """Frames of `window` dropped (forgotten once asked: the window's record is out)."""
        return self._dropped_by_window.pop(window, 0)

    # -- policy --------------------------------------------------------------------------------
    def _drop(self, consumer: str, window: int, reason: str) -> None:
        self.dropped[consumer] = self.dropped.get(consumer, 0) + 1
        self._dropped_by_window[window] = self._dropped_by_window.get(window, 0) + 1
        FRAMES_DROPPED.labels(consumer, reason).inc()
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            self._log.warning("live frames dropped: analysers are behind", reason=reason, window=window, dropped=dict(self.dropped))

    async def _publish_until_taken(self, subject: str, data: bytes, msg_id: str | None, kind: str) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await self.bus.publish(subject, data, msg_id, kind=kind)
                return
            except APIError as exc:
                if not is_refusal(exc):
                    raise
            self.refused += 1
            MEDIA_REFUSED.labels(kind).inc()
            if self._stopping:
                self._log.error("stream stopped while MEDIA was full; message not published", kind=kind, subject=subject)
                return
            if self.refused == 1 or self.refused % 100 == 0:
                self._log.warning("MEDIA is full; waiting to publish", kind=kind, refused=self.refused)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _has_room(self, size: int) -> bool:
        """Whether a message of `size` bytes fits the stream's backlog and MEDIA's byte budget."""
        self._room -= 1
        self._byte_room -= size
        if self._room >= 0 and self._byte_room >= 0:
            return True
        info = await self.bus.js.stream_info(subjects.MEDIA_STREAM, subjects_filter=subjects.media("*", self.stream_id))
        waiting, held = sum((info.state.subjects or {}).values()), info.state.bytes
        if waiting >= self.max_backlog or held + size > self.max_bytes:
            return False
        # this message is one of them
        self._room, self._byte_room = self.max_backlog - waiting - 1, self.max_bytes - held - size
        return True

    async def _wait_for_room(self, size: int) -> None:
        while not self._stopping and not await self._has_room(size):
            # not counted: the check is asked again, and the message was not sent
            self._room, self._byte_room = 0, 0
            await asyncio.sleep(PACE_POLL_S)
